"""Django views that place orders through this process's jetkit.sync Stream (see
messaging.py: opened on first use, so a forking server's workers each open their own)."""

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from messaging import stream  # in a project: from shop.messaging import stream

import jetkit as jk


@csrf_exempt  # called by other services, not by a browser form
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    ack = stream().publish_json_stored("shop.orders", json.loads(request.body))
    return JsonResponse({"seq": ack.seq}, status=202)


@csrf_exempt
@require_POST
def quote(request: HttpRequest) -> JsonResponse:
    try:
        reply = stream().request_json("shop.quote", json.loads(request.body), dict, timeout=2)
    except jk.RemoteError as exc:  # the responder raised
        return JsonResponse({"error": exc.message}, status=400)
    except jk.NoRespondersError:  # the quote service is not running
        return JsonResponse({"error": "no quote service is running"}, status=503)
    return JsonResponse(reply)

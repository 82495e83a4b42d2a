"""A Flask app that places orders and asks for quotes through jetkit.sync; the service
of ``jetkit.examples.service`` bills the orders and answers the quotes. Run it with
gunicorn (gunicorn.conf.py opens each worker's Stream after the fork)::

    SHOP_STORE_DIR=/var/lib/shop/store gunicorn --config gunicorn.conf.py flask_app:web
"""

from typing import Any

from flask import Flask, request
from messaging import stream

import jetkit as jk

web = Flask(__name__)


@web.post("/orders")
def place_order() -> tuple[dict[str, Any], int]:
    ack = stream().publish_json_stored("shop.orders", request.get_json())
    return {"seq": ack.seq}, 202


@web.post("/quote")
def quote() -> tuple[dict[str, Any], int]:
    try:
        reply = stream().request_json("shop.quote", request.get_json(), dict, timeout=2)
    except jk.RemoteError as exc:  # the responder raised
        return {"error": exc.message}, 400
    except jk.NoRespondersError:  # the quote service is not running
        return {"error": "no quote service is running"}, 503
    return reply, 200

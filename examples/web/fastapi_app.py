"""FastAPI and a jk.App in one process: the App runs while the web app does (its
lifespan), and routes publish through ``app.stream``, handed to them by a dependency::

    SHOP_STORE_DIR=./jetstream-store uvicorn fastapi_app:web
"""

import dataclasses
import os
from typing import Annotated

from fastapi import Depends, FastAPI

import jetkit as jk

app = jk.App(
    store_dir=os.environ.get("SHOP_STORE_DIR", "./jetstream-store"),
    default_mode=jk.TopicMode.JETSTREAM,
)
web = FastAPI(lifespan=app.lifespan)


@dataclasses.dataclass
class Signup:
    email: str
    plan: str


@app.on_startup
async def declare_topics(s: jk.Stream) -> None:
    await s.declare_topic("web.signups")


@app.subscriber("web.signups", durable="welcome-mail", ack=jk.AckPolicy.MANUAL, max_deliver=5)
async def send_welcome(signup: Signup) -> None:
    print(f"welcome mail to {signup.email} ({signup.plan})")


def stream() -> jk.Stream:
    """The App's Stream, for routes: ``Depends(stream)``."""
    return app.stream


@web.post("/signups", status_code=202)
async def sign_up(signup: Signup, s: Annotated[jk.Stream, Depends(stream)]) -> dict[str, int]:
    ack = await s.publish_json_stored("web.signups", signup)
    return {"seq": ack.seq}

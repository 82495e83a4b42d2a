"""gunicorn's settings for flask_app: the app is imported once, in the master, and each
worker opens its own jetkit Stream after the fork and closes it when it exits."""

bind = "127.0.0.1:8000"
workers = 2
preload_app = True  # imported before the fork: nothing may open a Stream at import
graceful_timeout = 30  # SIGTERM: a worker finishes its requests, then closes its Stream


def post_fork(server, worker):  # in the worker, after the fork
    from messaging import stream

    stream()  # open it now rather than on the worker's first request


def worker_exit(server, worker):  # in the worker, as it exits
    from messaging import close

    close()

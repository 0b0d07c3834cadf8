"""`voxpop alerts run`: the dispatcher loop until SIGTERM/SIGINT (finishes the attempts in hand)."""

from __future__ import annotations

import logging
import signal
import threading

from services.alerts.dispatcher import Dispatcher
from services.config import get_settings
from services.logs import configure_logging
from services.storage.db import engine_for, migrate

log = logging.getLogger("voxpop.alerts")


def main() -> None:
    s = get_settings()
    configure_logging(s.log_level)
    if not s.database_url:
        raise SystemExit("voxpop alerts needs VOXPOP_DATABASE_URL (or run it through `voxpop up`)")
    migrate(s.database_url)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    d = Dispatcher(engine_for(s.database_url), s.alerts)
    try:
        d.run_forever(stop)
    finally:
        d.close()
        log.info("alerts dispatcher stopped")


if __name__ == "__main__":
    main()

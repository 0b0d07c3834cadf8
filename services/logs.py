"""Process logging: one format for every `voxpop` process, and the chatty libraries kept quiet.

httpx logs every request with its full URL at INFO; webhook URLs carry tokens (Slack-style
`/services/T../B../secret`), so it stays at WARNING.
"""

from __future__ import annotations

import logging
import sys

QUIET = ("kafka", "aiokafka", "httpx", "httpcore", "urllib3")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)

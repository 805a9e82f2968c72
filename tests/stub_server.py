"""`python -m tests.stub_server PORT [section.key=value ...]`: the real `serve` start-up
(`serve_until_signalled`, signals and all) with the stub models, for the shutdown tests."""

import asyncio
import logging
import sys

from agent.config import load_config
from agent.testing import stub_models
from signaling.server import loopback_config, serve_until_signalled


def main() -> None:
    overrides = dict(item.split("=", 1) for item in sys.argv[2:])
    config = loopback_config(load_config(environ={}, overrides=overrides)).replace(**{"server.port": int(sys.argv[1])})
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(serve_until_signalled(config, stub_models()))


if __name__ == "__main__":
    main()

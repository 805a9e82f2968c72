#!/usr/bin/env python3
"""Give the voice agent your own tool through the attach API: the caller asks about an order by
voice, the model calls `lookup_order`, and the agent speaks what it returned.

A tool is an async function with type annotations and a docstring: its name, the docstring's
first paragraph and its `Args:` become what the model is told (a JSON Schema), and the model's
arguments are checked against that schema before the call. It runs with `tools.timeout_s`; if it
raises or times out the agent says `tools.apology` and sends an `error` event; if the caller
speaks over the answer while it runs, it is cancelled (it sees asyncio.CancelledError). The
calculator and the clock from config stay on beside it.

The call runs on 127.0.0.1 only (two peer connections in one process, as in
attach_to_your_peer_connection.py, whose call this reuses):

    .venv/bin/python examples/tools_by_voice.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other example, beside this file

from attach_to_your_peer_connection import main as call  # noqa: E402

from agent.tools import tool  # noqa: E402  (the other example put the checkout on sys.path)

ORDERS = {"1234": "shipped yesterday, arriving on Friday", "5678": "being packed today"}


async def lookup_order(order_id: str) -> str:
    """Look up the delivery status of a customer's order.

    Args:
        order_id: the order number the caller gives, digits only, e.g. 1234
    """
    try:
        await asyncio.sleep(0.05)  # your database or API call goes here; it may await freely
    except asyncio.CancelledError:
        print("lookup_order: cancelled (the caller spoke over the answer)")
        raise
    status = ORDERS.get(order_id.strip().lstrip("#"))
    return f"order {order_id}: {status}" if status else f"no order {order_id} was found"


if __name__ == "__main__":
    # A plain function works too (tools=[lookup_order]); tool() adds a line for the system prompt
    # that says when to use it, which a small model needs.
    order_tool = tool(lookup_order, instructions="For any question about an order, call lookup_order.")
    events = asyncio.run(call(None, "Where is my order 1234?", tools=[order_tool]))
    said = " ".join(e.text for e in events if e.type == "agent_text")
    print("tools called:", [e.name for e in events if e.type == "tool_call"], "| the agent said:", said)

"""One call's conversation: `AgentSession` (session.py) and the parts it dispatches to."""

from .session import AgentSession, EventSink, check_tools

__all__ = ["AgentSession", "EventSink", "check_tools"]

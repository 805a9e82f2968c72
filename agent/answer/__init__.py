"""The agent's answer to one user turn: `Answer` and the parts it is made of (see answer.py)."""

from .answer import Answer
from .stall_guard import StageStalled

__all__ = ["Answer", "StageStalled"]

"""SDP offer checks shared by `POST /offer` (JSON) and `POST /whip` (raw SDP).

`check_sdp_offer()` takes the SDP text of an offer and either returns it as an
RTCSessionDescription or raises OfferError with a message for the client that says what is
wrong: not SDP at all, does not parse, no audio section, or an audio section with no codecs.
"""

from __future__ import annotations

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription


class OfferError(ValueError):
    """An offer the agent cannot use; the message goes back to the client (HTTP `status`)."""

    status = 400


class OfferTooLarge(OfferError):
    status = 413


def check_sdp_offer(sdp: str, subject: str = "the offer", max_bytes: int | None = None) -> RTCSessionDescription:
    """Validate the SDP text of an offer; `subject` names where it came from in messages
    (e.g. "field 'sdp'", "the body"). Raises OfferError naming the problem."""
    if max_bytes is not None and len(sdp.encode("utf-8", "surrogatepass")) > max_bytes:
        raise OfferTooLarge(f"{subject} is larger than the {max_bytes} bytes an SDP offer may have")
    if not sdp.strip().startswith("v=0"):
        raise OfferError(f"{subject} is not an SDP session description (it must start with v=0)")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise OfferError(f"{subject} does not parse: {type(exc).__name__}: {exc}") from None
    kinds = [media.kind for media in parsed.media]
    if "audio" not in kinds:
        raise OfferError(f"the offer has no audio media section (found: {', '.join(kinds) or 'none'})")
    for media in parsed.media:
        if media.kind == "audio" and not media.rtp.codecs:
            raise OfferError("the offer's audio section lists no codecs")
    return RTCSessionDescription(sdp=sdp, type="offer")

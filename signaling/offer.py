"""SDP offer checks shared by `POST /offer` (JSON) and `POST /whip` (raw SDP): which offers the
agent answers, parsed with aiortc's own SDP parser (`aiortc.sdp.SessionDescription.parse`).

`check_sdp_offer()` returns a `CheckedOffer` or raises OfferError with a message for the client
that names the problem. The agent serves one conversation per call: one audio stream in each
direction, and optionally a data channel for its events.

Refused (400, with the reason), because the call could not work or would cost without serving:
- not SDP, does not parse, or not UTF-8 text; larger than `server.max_sdp_bytes` (413);
- no audio section, or more than one; an audio section that is disabled (port 0), lists no codecs,
  or is not `sendrecv` (sendonly: the caller would never hear the agent; recvonly or inactive:
  the agent would hear nothing);
- a section of a kind aiortc cannot answer (not audio, video or application), more than one data
  channel section, more than MAX_MEDIA_SECTIONS sections;
- a section without ICE credentials, without rtcp-mux (audio/video), without `a=setup`, or without
  a DTLS fingerprint aiortc can verify (sha-256/384/512): the call could never be secured;
- more than `ice.max_remote_candidates` candidates (the server checks every address an offer
  names), or candidates of which none is usable (see below).
Answered with the section declined (port 0 in the answer, direction inactive, nothing received
or decoded): video sections, so a caller that offers its camera still gets a voice call.
Remote candidates the server never contacts (removed from the offer before aiortc sees it):
names other than IP addresses (never resolved), `.local` mDNS names unless
`ice.allow_mdns_candidates`, addresses that are not unicast (unspecified, multicast, broadcast,
reserved) or ports out of range, and addresses outside `ice.allowed_candidate_networks` when it is set.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiortc import RTCSessionDescription
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS
from aiortc.sdp import SessionDescription

from agent.config import IceConfig

MAX_MEDIA_SECTIONS = 4  # audio, a data channel, and up to two declined video sections (camera, screen)
ANSWERED_KINDS = ("audio", "video", "application")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OfferError(ValueError):
    """An offer the agent cannot use; the message goes back to the client (HTTP `status`)."""

    status = 400


class OfferTooLarge(OfferError):
    status = 413


@dataclass(frozen=True)
class OfferPolicy:
    """What an offer may carry, from config."""

    max_sdp_bytes: int | None = None
    max_candidates: int = 20
    allow_mdns: bool = False
    networks: tuple[Network, ...] = ()

    @classmethod
    def from_config(cls, max_sdp_bytes: int | None, ice: IceConfig) -> "OfferPolicy":
        return cls(max_sdp_bytes, ice.max_remote_candidates, ice.allow_mdns_candidates,
                   tuple(ipaddress.ip_network(n, strict=False) for n in ice.allowed_candidate_networks))


@dataclass(frozen=True)
class CheckedOffer:
    """An offer the agent answers: `description` is what aiortc gets (unusable candidates
    removed), `declined_mids` the sections to answer with port 0."""

    description: RTCSessionDescription
    audio_mid: str | None
    declined_mids: tuple[str, ...]
    ice_ufrag: str | None

    @property
    def sdp(self) -> str:
        return self.description.sdp

    @property
    def type(self) -> str:
        return self.description.type


DIRECTION_PROBLEMS = {
    "sendonly": "the offer's audio is sendonly: the caller would never hear the agent; offer it as sendrecv",
    "recvonly": "the offer's audio is recvonly: the caller sends no audio for the agent to hear; offer it as sendrecv",
    "inactive": "the offer's audio is inactive: no audio would flow either way; offer it as sendrecv",
}


def check_sdp_offer(sdp: str, subject: str = "the offer", policy: OfferPolicy | None = None) -> CheckedOffer:
    """Validate the SDP text of an offer; `subject` names where it came from in messages
    (e.g. "field 'sdp'", "the body"). Raises OfferError naming the problem."""
    policy = policy or OfferPolicy()
    try:
        size = len(sdp.encode("utf-8"))
    except UnicodeEncodeError:
        raise OfferError(f"{subject} is not valid UTF-8 text (it holds an unpaired surrogate)") from None
    if policy.max_sdp_bytes is not None and size > policy.max_sdp_bytes:
        raise OfferTooLarge(f"{subject} is larger than the {policy.max_sdp_bytes} bytes an SDP offer may have")
    if not sdp.strip().startswith("v=0"):
        raise OfferError(f"{subject} is not an SDP session description (it must start with v=0)")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise OfferError(f"{subject} does not parse: {type(exc).__name__}: {exc}") from None
    audio = _check_sections(parsed)
    for media in parsed.media:
        _check_transport(media)
    removed = _filter_candidates(parsed, policy)
    declined = tuple(str(m.rtp.muxId) for m in parsed.media if m.kind == "video")
    if declined:
        bundle = next((g for g in parsed.group if g.semantic == "BUNDLE"), None)
        bundled = set(map(str, bundle.items)) if bundle is not None else set()
        if not all(str(m.rtp.muxId) in bundled for m in parsed.media if m.rtp.muxId):
            raise OfferError("the offer has video the agent would decline, but its sections are not bundled "
                             "(a=group:BUNDLE): offer audio alone, or bundle the sections")
    text = str(parsed) if removed else sdp
    return CheckedOffer(RTCSessionDescription(sdp=text, type="offer"), audio.rtp.muxId, declined,
                        audio.ice.usernameFragment if audio.ice else None)


def _check_sections(parsed: SessionDescription):
    kinds = [media.kind for media in parsed.media]
    if len(kinds) > MAX_MEDIA_SECTIONS:
        raise OfferError(f"the offer has {len(kinds)} media sections; the agent answers at most "
                         f"{MAX_MEDIA_SECTIONS} (one audio, one data channel, declined video)")
    for kind in kinds:
        if kind not in ANSWERED_KINDS:
            raise OfferError(f"the offer has a {kind!r} media section, which the agent cannot answer "
                             "(audio, video or application only)")
    audio = [media for media in parsed.media if media.kind == "audio"]
    if not audio:
        raise OfferError(f"the offer has no audio media section (found: {', '.join(kinds) or 'none'})")
    if len(audio) > 1:
        raise OfferError(f"the offer has {len(audio)} audio sections; the agent takes exactly one "
                         "(one conversation per call)")
    if kinds.count("application") > 1:
        raise OfferError(f"the offer has {kinds.count('application')} data channel (application) sections; "
                         "at most one is answered")
    media = audio[0]
    if media.port == 0:
        raise OfferError("the offer's audio section is disabled (port 0)")
    if not media.rtp.codecs:
        raise OfferError("the offer's audio section lists no codecs")
    if media.direction is None:
        raise OfferError("the offer's audio section has no direction (a=sendrecv)")
    if media.direction != "sendrecv":
        raise OfferError(DIRECTION_PROBLEMS[media.direction])
    return media


def _check_transport(media) -> None:
    where = f"the offer's {media.kind} section"
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        raise OfferError(f"{where} has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if media.kind in ("audio", "video") and not media.rtcp_mux:
        raise OfferError(f"{where} does not multiplex RTCP (a=rtcp-mux), which WebRTC requires")
    if media.dtls is None:
        raise OfferError(f"{where} has no DTLS role (a=setup)")
    if not media.dtls.fingerprints:
        raise OfferError(f"{where} has no DTLS fingerprint (a=fingerprint): the call could never be secured")
    if not any(f.algorithm in X509_DIGEST_ALGORITHMS for f in media.dtls.fingerprints):
        algorithms = ", ".join(sorted({f.algorithm for f in media.dtls.fingerprints}))[:80]
        raise OfferError(f"{where} has no DTLS fingerprint the agent can verify (got {algorithms}; "
                         f"supported: {', '.join(X509_DIGEST_ALGORITHMS)})")


def _filter_candidates(parsed: SessionDescription, policy: OfferPolicy) -> int:
    """Drop the candidates the server must never contact; returns how many were dropped."""
    total = sum(len(media.ice_candidates) for media in parsed.media)
    if total > policy.max_candidates:
        raise OfferError(f"the offer carries {total} ICE candidates; at most {policy.max_candidates} are accepted "
                         "(ice.max_remote_candidates)")
    reasons: dict[str, int] = {}
    for media in parsed.media:
        kept = []
        for candidate in media.ice_candidates:
            reason = _unusable(candidate.ip, candidate.port, policy)
            if reason is None:
                kept.append(candidate)
            else:
                reasons[reason] = reasons.get(reason, 0) + 1
        media.ice_candidates = kept
    dropped = sum(reasons.values())
    if total and dropped == total:
        why = "; ".join(f"{n} {reason}" for reason, n in reasons.items())
        raise OfferError(f"none of the offer's {total} ICE candidates may be used ({why})")
    return dropped


def _unusable(host: str, port: int, policy: OfferPolicy) -> str | None:
    """Why the server must not contact a remote candidate at `host`:`port` (None: it may)."""
    if not 0 < port < 65536:
        return "ports out of range"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower().endswith(".local"):
            return None if policy.allow_mdns else "mDNS .local names (ice.allow_mdns_candidates is off)"
        return "host names (never resolved)"
    if address.is_unspecified or address.is_multicast or (address.is_reserved and not address.is_loopback) or \
            (address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255")):
        return "addresses that are not unicast"
    if policy.networks and not any(address.version == n.version and address in n for n in policy.networks):
        return "addresses outside ice.allowed_candidate_networks"
    return None


def decline_in_answer(answer_sdp: str, mids: tuple[str, ...]) -> str:
    """The answer with the sections `mids` declined as RFC 8843 asks of an answerer: port 0,
    inactive, no candidates, and out of the BUNDLE group."""
    parsed = SessionDescription.parse(answer_sdp)
    for media in parsed.media:
        if str(media.rtp.muxId) in mids:
            media.port = 0
            media.direction = "inactive"
            media.ice_candidates = []
            media.ice_candidates_complete = False
    for group in parsed.group:
        if group.semantic == "BUNDLE":
            group.items = [item for item in group.items if str(item) not in mids]
    return str(parsed)

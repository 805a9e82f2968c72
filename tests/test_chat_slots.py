"""`ChatSlots`: a conversation keeps to the slot that holds its prompt, also while its own earlier
reply (or warm-up) still holds it; others take the free slot given back longest ago."""

import asyncio

from agent.brains.llama_chat import ChatSlots


class Conversation:
    """A stand-in owner (any object: the cascade's conversation in production)."""


async def test_a_reply_waits_for_the_slot_its_own_conversation_still_holds():
    slots = ChatSlots([object(), object(), object()])
    mine, other = Conversation(), Conversation()
    async with slots.lease(None, owner=mine) as first:
        taken = asyncio.Event()

        async def next_reply():
            async with slots.lease(first, owner=mine) as index:
                taken.set()
                return index

        waiting = asyncio.create_task(next_reply())
        await asyncio.sleep(0.01)
        assert not taken.is_set()  # two slots are free, but not the one holding this conversation's prompt
        async with slots.lease(first, owner=other) as elsewhere:
            assert elsewhere not in (None, first)  # another conversation does not wait: it goes elsewhere
    assert await waiting == first


async def test_a_warm_up_never_waits_and_others_take_the_slot_given_back_longest_ago():
    slots = ChatSlots([object(), object()])
    owner = Conversation()
    async with slots.lease(0, owner=owner), slots.lease(1):
        async with slots.lease(0, wait=False, owner=owner) as none:
            assert none is None
    async with slots.lease(None) as index:
        assert index == 1  # slot 1 went back first (the inner block ended first)

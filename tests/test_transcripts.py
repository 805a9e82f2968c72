"""The transcript rule that ends a turn the end-of-turn model doubts: on real sentence endings
(statements, requests and questions as people say them) and on speech cut off mid-sentence."""

import pytest

from agent.pipeline.transcripts import sounds_finished

# Finished sentences as whisper writes them, many ending on the words a phrase cutter avoids
# ("that", "in", "it", "do", ...): the end-of-turn model called several of these unfinished.
FINISHED = (
    "My name is Oliver, please remember that.",
    "Which city do I live in?",
    "I live in Lisbon. Please keep that in mind.",
    "Thanks, that was helpful.",
    "What is it for?",
    "Where are you from?",
    "Can you turn it on?",
    "Who did you talk to?",
    "What are you up to?",
    "Yes, I do.",
    "No, it isn't.",
    "I think so.",
    "Tell me more about it.",
    "Can you repeat that?",
    "I'd love to.",
    "What is it made from?",
    "How many?",
    "Thank you very much.",
    "What is twelve times eleven?",
    "What time is it?",
    "Remind me to call my sister on Friday.",
    "Let's do this.",
    "I don't know what to do with them.",
    "Sorry, one more thing.",
    "Okay, go on.",
    "Could you say that again, please?",
    "Never mind.",
    "I'll be there at nine.",
    "That's all I wanted.",
    "Please write that down.",
    "Can you help me with this?",
    "I was born in nineteen ninety.",
    "Ok thanks a lot",  # whisper's own spelling, no punctuation: a closing formula
    "Great thank you",
    "No, that's all",
    "Can you send it to me please",
    "Tell me something fun",  # unpunctuated: three words or more, ending on a content word
    "What is the capital of France",
)
# Speech stopped mid-sentence: whisper still often closes it with a full stop.
CUT_OFF = (
    "What is the capital of.",
    "Can you tell me how many.",
    "Tell me a joke about.",
    "Which planet is closest to the.",
    "I want to go with.",
    "My favourite colour is my.",
    "I need apples and.",
    "It is bigger than.",
    "Can you tell me",
    "What is the weather like in",
    "Set a timer for.",
    "I'm looking at.",
    "It's a very.",
    "Tell me about the history of",
    "Give me either.",
    "Remind me to call my sister because.",
    "Tell me a story about a dragon who",  # unpunctuated: the words alone must say it
    "I think",
    "Could you tell me what",
)


@pytest.mark.parametrize("text", FINISHED)
def test_a_finished_sentence_sounds_finished(text):
    assert sounds_finished(text)


@pytest.mark.parametrize("text", CUT_OFF)
def test_speech_cut_off_mid_sentence_does_not(text):
    assert not sounds_finished(text)


def test_annotations_and_closing_quotes_are_looked_past():
    assert sounds_finished('He said "I do." (laughs)')
    assert not sounds_finished("What is the (coughs)")

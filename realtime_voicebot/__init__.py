"""realtime_voicebot: long spoken conversations with the OpenAI Realtime API."""

__version__ = "0.1.0"

"""The session core: every decision of a conversation, without I/O.

| module | decides |
| --- | --- |
| `session.py` | `SessionCore`: routes what happens to the parts below, in order; rollover |
| `conversation.py` | nothing: the server's items mirrored, the history, items' lifecycle |
| `turn_taking.py` | barge-in (speech or typing over a reply), typed lines, the reply watchdog |
| `tool_calls.py` | which function calls to run, when to answer them, which to drop |
| `compaction/` | when to summarize (policy), the confirmed insert-and-delete (procedure), the
  phases of one compaction (compactor) |
| `recap.py` | the summary and seed items, quoted as records |
| `actions.py` | what the core asks the shells to do, and what it tells them happened |
"""

from realtime_voicebot.core.session import CoreConfig, SessionCore
from realtime_voicebot.core.turn_taking import Playback

__all__ = ["CoreConfig", "Playback", "SessionCore"]

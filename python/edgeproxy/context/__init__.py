"""Context management: the pure parts (docs/context.md).

- ``turns``: a conversation as blocks that are never split (an assistant's tool calls with
  their results), and prefix hashes over them (the summary cache's and affinity's keys);
- ``measure``: a request's tokens per message, exact in the candidate's encoding (Rust);
- ``compact``: which strategies run for a window (``plan``) and the compacted messages
  (``assemble``), with the markers that say what was cut;
- ``summary``: the summariser's request and the summary message;
- ``breakpoints``: Anthropic prompt-cache breakpoints on a long stable prefix.

No I/O and no clock here: the request path (``server.compaction``) measures off the event loop,
calls the summariser and records what ran.
"""

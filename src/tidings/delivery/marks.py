"""What an operator leaves for the workers: a paused subscription, an edited payload to retry.

Both are documents written in the operator's audited transaction (docs/console.md); the runner
reads them where it claims partitions and where it replays a held message, never per message.
"""

from __future__ import annotations

import msgspec

from tidings.messages import Envelope
from tidings.records import Held
from tidings.store import Store

#: Subscriptions an operator paused: a document per name (deleted on resume).
PAUSED = "$paused"

#: Payloads an operator edited for one subscription's retry of a held message (docs/console.md):
#: the log stays as recorded; the edit replaces the payload for that replay only.
EDITS = "$edits"


def edit_key(held: Held) -> str:
    """The key of a held message's edited payload in ``EDITS``."""
    return f"{held.subscription}@{held.global_position}"


async def edited(store: Store, subscription: str, env: Envelope) -> Envelope | None:
    """The envelope with the payload an operator edited for ``subscription``, if there is one."""
    found = await store.get_document(EDITS, f"{subscription}@{env.global_position}")
    if found is None:
        return None
    return msgspec.structs.replace(env, data=msgspec.json.decode(found)["data"].encode())

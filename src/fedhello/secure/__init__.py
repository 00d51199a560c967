"""Secure aggregation for per-tensor uploads (SecAgg+, Bell et al. 2020; Bonawitz et al. 2017), transport-agnostic.

Each client uploads only the tensors its plan trains; the server learns each tensor's sum over the clients that
uploaded it and survived the round, never one client's change. A round is four exchanges (`client.STAGES`):

  setup         each client makes two key pairs (an encrypted channel, mask agreement) and returns the public keys
  share-keys    the server broadcasts the keys; each client Shamir-shares its self-mask seeds (one per group of its
                tensors with the same uploaders) and its mask secret key, encrypting each share for its recipient
  masked-input  the server forwards the shares and tells each client, per tensor it uploads, the other uploaders;
                the client returns its change, clipped, quantised, plus its self mask and +/- a pairwise mask with
                each other uploader of that tensor (the pairwise masks cancel per tensor)
  unmask        survivors return shares of the survivors' seeds and of the dropped clients' mask keys; the server
                reconstructs them, removes the masks and decodes each tensor's sum (a tensor left with fewer than
                `min_contributors` uploaders is withheld: its seeds are never asked for)

Payloads are dicts of ints, floats, strings, bytes and lists of them, plus, in a masked-input reply, `masked`: a
dict of unsigned integer numpy arrays; a transport carries them as it likes (`InProcessExchange` here, Flower
messages in `fedhello.engines.flower`). Cryptography is Flower's (`crypto`). docs/privacy.md has the threat model.
"""

from fedhello.secure.client import MASKED_INPUT, SETUP, SHARE_KEYS, STAGES, UNMASK, Payload, handle, wire_dtype
from fedhello.secure.server import Exchange, SecureResult, payload_bytes, secure_sum
from fedhello.secure.settings import SecureAggregationError, SecureSettings
from fedhello.secure.transport import InProcessExchange, LocalClient, local_clients, members_and_shapes

__all__ = [
    "MASKED_INPUT",
    "SETUP",
    "SHARE_KEYS",
    "STAGES",
    "UNMASK",
    "Exchange",
    "InProcessExchange",
    "LocalClient",
    "Payload",
    "SecureAggregationError",
    "SecureResult",
    "SecureSettings",
    "handle",
    "local_clients",
    "members_and_shapes",
    "payload_bytes",
    "secure_sum",
    "wire_dtype",
]

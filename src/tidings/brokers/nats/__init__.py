"""The NATS JetStream broker (``pip install 'tidings[nats]'``), built for nats-server 2.9.

``nats://[user:password@]host:port[,host:port...]/?namespace=NAME&replicas=N`` (or
``tls://``): every server is tried on connect and on each reconnect; ``namespace`` (default
``tidings``) prefixes every stream name and subject, so that deployments and test runs share a
server; ``replicas`` (default 1) is the replica count of every stream created.
:meth:`NatsBroker.delete_namespace` deletes everything of one namespace.

**Layout** (see :mod:`tidings.brokers.nats.names`). A stream per topic, file storage,
limits retention (every message kept 7 days, read or not: interest retention loses
acknowledged messages across a graceful restart of a 2.9 server, see
:data:`~tidings.brokers.nats.admin.KEEP_SECONDS`), subjects ``NS.<topic>.<eventType>``; a
durable pull consumer per
subscription on each topic stream it reads; one redrive stream and one dead-letter stream per
namespace with a subject per subscription; a record per subscription (policy and filter
history) that every consumer reads.

**Filters.** A 2.9 server takes one filter subject per consumer, and 2.9.10 accepts a
changed filter on update but then skips every message, so each consumer filters on
``NS.<topic>.*`` and the client filters event types: a message the subscription does not
accept is acknowledged unseen. The filter in force when a message was *published* decides
(the record keeps filter changes by stream sequence), so changing a subscription's event
types or topics behaves as if messages had been routed at publish time. The price: every
subscription receives (and drops) the event types of its topics it does not want, and
``Depth.ready`` counts those not yet dropped.

**Consuming.** A consumer hands out at most ``prefetch`` deliveries unsettled at once. It
asks each durable consumer that recently had messages for as many as there is room for
(``no_wait``), and, while a caller waits with nothing to hand out, long-polls the others for
one message each (:mod:`tidings.brokers.nats.pull`); a consumer nobody iterates holds no open
request, so it takes nothing away from the other consumers of its subscription. Acks are
gathered while they keep coming (a few event-loop turns, at most milliseconds), then written
at once and confirmed together: ``ack()`` returns once JetStream applied it, one write and
one round trip shared by the whole burst (see :class:`~tidings.brokers.nats.wire.Settler`).

**Attempts and leases.** ``Delivery.attempt`` is JetStream's ``num_delivered`` (a redriven
message is a new message and starts at 1). The lease is the consumer's ``ack_wait``: an
unsettled delivery comes back ``lease_seconds`` after it was handed out, whoever holds it,
and settling it afterwards is a no-op. ``retry(delay)`` is a NAK with that delay; on the last
attempt it dead-letters instead, with the reason given. ``max_deliver`` is unlimited on
purpose: a 2.9 server that reaches ``max_deliver`` only drops the message from the
consumer's pending set (it stays stored, never delivered again), so
instead a delivery that arrives with its attempt above ``max_attempts`` (the last attempt
went unsettled: a crash or a lapsed lease) is dead-lettered by the consumer that receives it,
with a reason saying so, and keeps coming back until that succeeds. A closing consumer
dead-letters the deliveries it holds on their last attempt and gives the others back at once
(a NAK); those it fetched but never handed out go back uncounted, copied to the redrive
subject with their earlier attempts before the original is acked. Backoff between attempts
is the caller's ``retry`` delay (the listener runtime computes it from the subscription's
backoff); the consumer's own ``backoff`` setting is not used, since it would replace
``ack_wait`` and so break the lease.

**Dead letters** are messages on ``NS._dead.<subscription>`` with the original body and
headers plus ``Tidings-Reason``, ``Tidings-Attempts``, ``Tidings-First-Failed-At`` (when this
process saw the first failure; absent otherwise), ``Tidings-Last-Failed-At``,
``Tidings-Topic``, ``Tidings-Event-Type`` and ``Tidings-Message-Id``; their id is their
sequence in the dead-letter stream. ``redrive`` copies them to ``NS._redrive.<subscription>``,
which only that subscription's redrive consumer reads (so nothing reaches any other
subscription), then deletes them; ``purge`` deletes them.

**Depth.** ``ready`` is what was never delivered (``num_pending``) plus what this broker
object gave back and no consumer took yet; ``delayed`` counts the retries this object asked
for whose delay has not passed; ``in_flight`` is every other unacknowledged delivery, so
retries and give-backs of other processes count as in flight until redelivered (JetStream
does not tell these apart); ``dead`` counts the dead letters.

**Publishing** sends a batch at once and returns when every PubAck arrived (a lost connection
fails it at once with :class:`~tidings.errors.BrokerUnavailable`); the message id is
``Nats-Msg-Id``, so a message republished within the stream's two-minute duplicate window
is stored once. See :mod:`tidings.brokers.nats.codec` for headers and for messages larger
than the server's ``max_payload``.

**Durability.** Streams use file storage. nats-server 2.9 acknowledges a publish (and
applies an ack) before it reaches the disk, which it syncs every two minutes: a single server
killed with SIGKILL, or a power loss, can lose acknowledged messages and acks (lost acks mean
redeliveries). A graceful stop loses nothing. With ``replicas=3`` on a three-node cluster a
publish is acknowledged once a majority holds it, and losing one node loses nothing.

**Reconnecting** is nats-py's: it retries the servers forever. Publishes and acks waiting for
an answer fail when the connection drops; consumers ask again as soon as it is back (a
restarted server lost their open requests), and deliveries left unsettled come back after
their lease. Nothing is lost and every effect stays at least once.

**Declaring again** updates ``ack_wait`` (the lease), the attempt limit, ``in_flight``, the
event types and topics (through the filter history) and the replica count of the streams.
It never deletes a stream; it deletes the consumer of a topic a subscription dropped once
nothing the subscription accepted is left on it.

**Capabilities.** ``per_key_order=False``: competing pull consumers, NAK redelivery and the
redrive stream all reorder. ``leases=True``: see above. ``durable=True``, with the fsync
caveat above. ``multi_process=True``: any number of processes and hosts share a subscription.
"""

from __future__ import annotations

from tidings.brokers.nats.broker import CAPABILITIES, NatsBroker
from tidings.brokers.nats.url import NatsOptions, parse_url

__all__ = ["CAPABILITIES", "NatsBroker", "NatsOptions", "parse_url"]

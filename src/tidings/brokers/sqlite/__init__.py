"""The embedded default broker: one SQLite file that the processes of one machine share.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; the folder, file and
tables are created on first open (safely when several processes open a new file at once).
Option ``?synchronous=NORMAL`` (default) or ``?synchronous=FULL``.

What it promises, beyond :mod:`tidings.brokers.base`:

* **Durability.** ``publish`` and every settlement return after their transaction
  committed. A commit survives the crash of any process. With ``synchronous=NORMAL`` the
  last transactions before a power loss or an operating-system crash may be lost; with
  ``synchronous=FULL`` they are not, and commits run at about a third of the rate.
* **Sharing.** Consumers in any process of the machine compete for one subscription;
  publishers and consumers may live in different processes. Use a local file system
  (SQLite's write-ahead log does not work over a network file system).
* **Leases.** A delivery is leased for the subscription's ``lease_seconds``; if it is not
  settled by then (its process died, or its handler took too long) it comes back, and
  settling it afterwards changes nothing. A closed consumer gives back its unsettled
  deliveries at once. A delivery that comes back after its last attempt goes to the dead
  letters instead, with a reason saying so.
* **Order.** Per subscription, deliveries go out in publish order; a message with a
  non-empty key waits while an earlier message of its key is unsettled or waiting for its
  retry.
* **Latency.** A consumer waiting in one process learns of a commit in another within a few
  milliseconds (inotify on Linux, polling elsewhere), and an idle consumer costs next to no
  CPU.
* **Dead letters** keep their message until redriven or purged; their id is the message's
  position in publish order, and a redriven message keeps that position.
"""

from __future__ import annotations

from tidings.brokers.sqlite.broker import CAPABILITIES, SqliteBroker
from tidings.brokers.sqlite.url import SqliteOptions, parse_url

__all__ = ["CAPABILITIES", "SqliteBroker", "SqliteOptions", "parse_url"]

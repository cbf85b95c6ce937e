"""Every default the hub, the runner and the CLI share, written once."""
from __future__ import annotations

DATABASE = "tensorhub"          # database used when the URI names none
SERVER_TIMEOUT_MS = 5000        # how long a call waits for the server before giving up
LEASE_SECONDS = 60.0            # a claim's lease; renewed every third of it
POLL_INTERVAL = 1.0             # an idle runner reads the queue signal (one lookup by _id) this often
GRACE_SECONDS = 30.0            # on SIGTERM, how long running tasks may finish
MAX_ATTEMPTS = 3                # attempts a task gets before it is failed
WAIT_POLL_INTERVAL = 1.0        # wait_for_tasks' poll interval

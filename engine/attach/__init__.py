"""Attaching a user's own process to a running engine: push rows in, subscribe to rows out.

* ``protocol`` — the wire protocol on the Unix socket (one JSON object per line),
  shared by both ends.
* ``endpoint`` — the engine's side: the socket, its accept thread, the peers; used
  by the push source (``connectors.push``) and the subscribe sink
  (``connectors.subscribe``) alike.
* ``client`` — the user's side: ``connect(dir).source(name)`` /
  ``connect(dir).subscribe(name)`` (re-exported as ``engine.connect``).
"""

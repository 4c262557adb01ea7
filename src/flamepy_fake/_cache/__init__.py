"""The fake's Arrow Flight object cache, as Flame v0.6.0's ``flame-object-cache`` answers.

``_keys`` parses keys and tickets and holds the refusals (``StoreError``, with the real
cache's status and text); ``_payloads`` encodes what is stored and sent back (Arrow record
batches, the response schema); ``_store`` is the object model (versions, patches, memory limit,
persistence), plain Python over pyarrow buffers with no transport; ``_server`` is the thin Flight
adapter (``FakeObjectCache``) that maps store errors to Flight statuses in one place, records
calls and applies injected faults.

Nothing is imported here: ``from flamepy_fake._cache._server import FakeObjectCache`` (or
``flamepy_fake.FakeObjectCache``) loads pyarrow's Flight only when a cache is wanted.
"""

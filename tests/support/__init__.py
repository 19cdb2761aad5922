"""
What the test modules share: harnesses, fakes and helpers, one module per
job.  Test modules import from here and never from one another, so a test
module can be read, moved or deleted on its own.

- `tests.support.disk`: disk work run at once or held, storage whose disk
  fills up, and what landed on disk.
- `tests.support.pumping`: `pump`, which drives in-memory connections and a
  Clock until a condition holds.
- `tests.support.proxies`: the real service and a fake upstream on
  127.0.0.1, for the real reactor.
- `tests.support.harness`: the proxy built by the composition root, reached
  in memory.
- `tests.support.wire`: HTTP/1.1 over a StringTransport, and parsing what a
  server wrote.
- `tests.support.uploads`: the request bodies twine sends.
- `tests.support.producers`: a fake `IFileSource` for the response tests.
- `tests.support.clients`: subprocesses: pip, uv, twistd.
- `tests.support.tls`: certificates made for a test.
- `tests.support.auth`: htpasswd entries and a counting bcrypt check.
"""

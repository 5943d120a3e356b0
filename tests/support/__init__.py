"""What the tests share, one module per thing given. Test modules import from here,
never from one another; tests/conftest.py registers the modules with fixtures.

Servers (each fixture lazy: nothing connects until a test asks for it)
    database    the run's PostgreSQL database: `database_url`, `pool`; `scratch_database`
    broker      RabbitMQ: the shared `vhost`, a `prefix` per test, `broker_refusals`
    servers     `settings` for a hub on both, `eventually`, `free_port`
Parties
    agencies    `make_agency` (a registered agency with a broker user), `sql_agencies`
    hub         `hub` (a hub running in the test's event loop), `Party` (a library's system)
    network     the dispatch tests' `network` of a requester and three suppliers, `priced`
    iso18626_peer  an ILL system speaking ISO 18626 XML over HTTP (`XmlPeer`, `HubClient`)
    delivery    FTP, SMTP and HTTP servers for document delivery (`dl_*` fixtures)
    operators   the operators' pages: a signed-in client, tables read from pages
What they say and run (pure)
    messages    ISO 18626 requests, supplier messages and requester actions
    cli         `run.py` in a child process: a command (`run`) or the hub (`start_hub`)
    names       names unique to the run: symbols, budgets, transaction ids, ISSNs
    money       `cny`, `at` (consortium-local instants)
    settlement  the settlement tests' worked example, `fresh_year`, `after`
    paths       `ROOT`, `DOCS`, `DATA`
"""

"""Plumbing under the domains: database, broker topology, outbox and relay, mail
queue, flags, advisory locks."""

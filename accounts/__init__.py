"""People's accounts: roles as data, accounts and grants, sessions, API tokens, and the
audit of what people did (issue 16). A domain package beside delivery and settlement:
it uses infra and schemas; web and app use it."""

"""A library's own pages (`/lib/...`): its transactions, their trails, the actions a
library takes when its own ILL system is down, its statements and budgets."""

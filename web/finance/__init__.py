"""Finance pages (`/fin/...`): settlement statements by period with their files, the
centre's summary, subsidy budgets; each person sees the agencies their role reaches."""

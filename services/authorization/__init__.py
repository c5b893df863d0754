"""Authorization service: data requests, the policy that decides them, and the grant lifecycle."""

"""What the pages need beyond the API's use cases: cookie sessions, the sign-in, the console's
administrators."""

"""Developer tools: a throwaway PostgreSQL cluster, the demo, and the test kit for backend authors."""

"""HTTP routers: parse, call one service method, return a schema."""

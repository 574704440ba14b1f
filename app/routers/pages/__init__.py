"""Pages for people: the API documentation, self-service (/me/) and the console (/console/).

Server-rendered with Jinja2 (app/templates/); scripts and styles are files under app/static/,
served by roamsign itself, so the Content-Security-Policy (app.middleware) needs no
`unsafe-inline` and no page reaches for another host."""

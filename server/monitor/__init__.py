"""The monitor: a web page for the video village, served by its own process (`ttt-studio monitor`).

The one rule: the monitor holds no authority of its own. It is a gRPC *client* of the ttt-studio server;
every request the page makes becomes a gRPC call carrying the signed-in user's own token, so the page
shows a user exactly what the API shows them (docs/monitor.md argues the design).

    config.py    MonitorConfig: every setting in one frozen dataclass
    sessions.py  sign-in sessions: a random cookie id -> the user's token, kept in memory only
    gateway.py   the gRPC side (grpc.aio): calls with a user's token, protos -> JSON, frames -> a sheet
    app.py       the Starlette app: the page, its JSON endpoints and one server-sent-events stream
    static/      the page itself: plain HTML, CSS and JavaScript, no build step
"""

"""The chosen stack works under trio: httpx (HTTP) and trio-websocket clients reach the server."""

import trio_websocket
import json



async def test_http_client_under_trio_reaches_the_server(http):
    response = await http.post("", json={"jsonrpc": "2.0", "method": "node_info", "id": 1})
    assert response.status_code == 200
    assert response.json()["result"]["zone"] == "z1"


async def test_websocket_client_reaches_the_server(server, token):
    async with trio_websocket.open_websocket_url(server.ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "method": "node_info", "id": 7}))
        answer = json.loads(await ws.get_message())
        assert answer["id"] == 7 and answer["result"]["zone"] == "z1"

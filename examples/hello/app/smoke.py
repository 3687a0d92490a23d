"""Smoke check: the service at $URL is healthy and says hello."""

import json
import os
import urllib.request

url = os.environ["URL"]
with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
    assert r.status == 200, r.status
with urllib.request.urlopen(url + "/", timeout=5) as r:
    body = json.loads(r.read())
    assert body["message"] == "hello", body
print("smoke check passed:", url, body["version"])

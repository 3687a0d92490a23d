"""Smoke check: the service at $URL is healthy and says hello."""

import json
import os
import urllib.error
import urllib.request

url = os.environ["URL"]
with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
    assert r.status == 200, r.status
# A smoke check asks "does it work at all?": one good answer in five tries. Judging the error
# rate is the canary analysis' job.
for attempt in range(5):
    try:
        with urllib.request.urlopen(url + "/", timeout=5) as r:
            body = json.loads(r.read())
        break
    except urllib.error.HTTPError:
        if attempt == 4:
            raise
assert body["message"] == "hello", body
print("smoke check passed:", url, body["version"])

"""Creates a blob container in Azurite (tests/src/azurite.rs): object_store does not create
containers. Signs the request with Azurite's well-known account key (SharedKey), as any Azure
client would. Arguments: the blob port, the container name.
"""
import base64, hashlib, hmac, sys, urllib.request, email.utils
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
port, container = sys.argv[1], sys.argv[2]
date = email.utils.formatdate(usegmt=True)
version = "2021-08-06"
sts = "\n".join(["PUT", "", "", "", "", "", "", "", "", "", "", "",
                 f"x-ms-date:{date}\nx-ms-version:{version}",
                 f"/{account}/{account}/{container}\nrestype:container"])
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/{account}/{container}?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}", "Content-Length": "0"})
try:
    print(urllib.request.urlopen(req).status)
except urllib.error.HTTPError as e:
    print(e.code, e.read()[:300]); sys.exit(1)

"""Sets up an IAM-enforcing moto server for the append-only tests (tests/src/s3.rs).

moto enforces IAM policies once INITIAL_NO_AUTH_ACTION_COUNT requests have been served; this
script makes exactly that many (IAM_SETUP_REQUESTS in s3.rs): the bucket (with object lock when the
third argument is "lock"), then a maintenance
user that may do anything and a host user that may read, list and write but never delete.
Prints the users' access keys as JSON.
"""
import json
import sys

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
# "lock": the bucket has object lock (and so versioning) enabled.
locked = sys.argv[3:] == ["lock"]
common = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="setup", aws_secret_access_key="setup")
boto3.client("s3", **common).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=locked)
iam = boto3.client("iam", **common)
policies = {
    "maintenance": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    "host": [{
        "Effect": "Allow",
        # Read and write, never delete; PutObjectRetention is what S3 asks of an upload that
        # carries a lock (it cannot shorten a compliance lock).
        "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:PutObjectRetention"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
    }],
}
keys = {}
for user, statements in policies.items():
    iam.create_user(UserName=user)
    document = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}
print(json.dumps(keys))

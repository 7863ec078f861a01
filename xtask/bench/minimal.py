"""The benchmark estate with plain boto3 and the fewest calls that do the job: one
RunInstances per role, one waiter, one Route53 batch; a no-op pass that only reads; a
teardown that only deletes what it tagged. The floor heet is measured against.

usage: minimal.py ENDPOINT PER_ROLE DOMAIN up|noop|down
"""
import sys

import boto3
from botocore.config import Config

ROLES = ["app", "db", "www"]


def clients(endpoint):
    # Standard retries, as AWS advises: under real limits the one CreateTags per instance
    # below is throttled past CreateTags' burst, and legacy retries give up too soon.
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing",
              config=Config(retries={"mode": "standard", "max_attempts": 10}))
    return boto3.client("ec2", **kw), boto3.client("route53", **kw)


def instances(ec2):
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:project", "Values": ["bench"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]):
        for r in page["Reservations"]:
            found.extend(r["Instances"])
    return found


def zone_id(r53, domain, create):
    zones = r53.list_hosted_zones_by_name(DNSName=domain)["HostedZones"]
    for z in zones:
        if z["Name"] == domain + ".":
            return z["Id"]
    if create:
        return r53.create_hosted_zone(Name=domain, CallerReference="bench-" + domain)["HostedZone"]["Id"]
    return None


def records(r53, zone):
    found = {}
    for page in r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone):
        for rr in page["ResourceRecordSets"]:
            if rr["Type"] == "CNAME":
                found[rr["Name"].rstrip(".")] = rr
    return found


def wanted(ins, domain):
    out = {}
    for i in ins:
        tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        slot = tags["slot"]
        for name in (f"{slot}.{domain}", f"bench-{slot}.{domain}"):
            out[name] = i["PublicDnsName"]
    return out


def change(r53, zone, changes):
    for start in range(0, len(changes), 500):
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes[start:start + 500]})


def up(ec2, r53, per_role, domain):
    zone = zone_id(r53, domain, True)
    have = instances(ec2)
    if have:
        return noop(ec2, r53, domain)
    ids = []
    slots = []
    for role in ROLES:
        # One call per role; the slot tag is set per instance after, as RunInstances tags
        # every instance of a call alike.
        out = ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro",
                                MinCount=per_role, MaxCount=per_role, TagSpecifications=[{
                                    "ResourceType": "instance",
                                    "Tags": [{"Key": "project", "Value": "bench"},
                                             {"Key": "role", "Value": role}]}])
        for n, i in enumerate(out["Instances"], 1):
            ids.append(i["InstanceId"])
            slots.append((i["InstanceId"], role, n))
    # EC2 is eventually consistent: CreateTags right after RunInstances may not find the
    # instances yet (AWS's advice: wait until they exist).
    ec2.get_waiter("instance_exists").wait(InstanceIds=ids, WaiterConfig={"Delay": 1})
    for instance, role, n in slots:
        ec2.create_tags(Resources=[instance], Tags=[
            {"Key": "slot", "Value": f"{role}-{n:02d}"},
            {"Key": "Name", "Value": f"bench-bench-{role}-{n:02d}"}])
    ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1})
    change(r53, zone, [{"Action": "UPSERT", "ResourceRecordSet": {
        "Name": name, "Type": "CNAME", "TTL": 300, "ResourceRecords": [{"Value": target}]}}
        for name, target in wanted(instances(ec2), domain).items()])


def noop(ec2, r53, domain):
    zone = zone_id(r53, domain, False)
    want = wanted(instances(ec2), domain)
    have = records(r53, zone)
    missing = [n for n, t in want.items() if n not in have]
    print(f"{len(want)} records wanted, {len(missing)} missing")


def down(ec2, r53, domain):
    zone = zone_id(r53, domain, False)
    ids = [i["InstanceId"] for i in instances(ec2)]
    mine = {n: rr for n, rr in records(r53, zone).items()
            if n.split(".")[0].split("-")[0] in ROLES + ["bench"]}
    if mine:
        change(r53, zone, [{"Action": "DELETE", "ResourceRecordSet": rr} for rr in mine.values()])
    for start in range(0, len(ids), 1000):
        ec2.terminate_instances(InstanceIds=ids[start:start + 1000])


def main():
    endpoint, per_role, domain, action = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ec2, r53 = clients(endpoint)
    if action == "up":
        up(ec2, r53, per_role, domain)
    elif action == "noop":
        noop(ec2, r53, domain)
    elif action == "down":
        down(ec2, r53, domain)


if __name__ == "__main__":
    main()

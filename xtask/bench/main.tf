# The benchmark estate for Terraform: `per_role` instances in each of three roles, each with
# two CNAMEs (`<role>-<index>` and the indexed `bench-<role>-<index>`), in a zone it creates.
# The same estate as xtask/bench/heet.toml; run by `cargo xtask bench` against moto.

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

variable "endpoint" {
  type = string
}

variable "per_role" {
  type = number
}

variable "domain" {
  type = string
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {
    ec2     = var.endpoint
    route53 = var.endpoint
    ssm     = var.endpoint
    sts     = var.endpoint
  }
}

locals {
  roles = ["app", "db", "www"]
  slots = {
    for s in flatten([
      for r in local.roles : [for i in range(var.per_role) : { role = r, index = i + 1 }]
    ]) : format("%s-%02d", s.role, s.index) => s
  }
}

resource "aws_route53_zone" "zone" {
  name = var.domain
}

resource "aws_instance" "node" {
  for_each      = local.slots
  ami           = "ami-12c6146b"
  instance_type = "t3.micro"
  tags = {
    Name    = "bench-bench-${each.key}"
    project = "bench"
    env     = "bench"
    role    = each.value.role
  }
}

resource "aws_route53_record" "role" {
  for_each = aws_instance.node
  zone_id  = aws_route53_zone.zone.zone_id
  name     = "${each.key}.${var.domain}"
  type     = "CNAME"
  ttl      = 300
  records  = [each.value.public_dns]
}

resource "aws_route53_record" "indexed" {
  for_each = aws_instance.node
  zone_id  = aws_route53_zone.zone.zone_id
  name     = "bench-${each.key}.${var.domain}"
  type     = "CNAME"
  ttl      = 300
  records  = [each.value.public_dns]
}

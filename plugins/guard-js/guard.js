// Reference plugin, in JavaScript: the same policy as the Rust guard (plugins/guard), every
// violation at once. Config (`[plugins.config.NAME]`), every rule optional:
//   max_count_per_role = 10
//   max_size = "large", max_size_except = ["production"]
//   require_tags = ["owner"]
//   closed_ports = [22, 5432], open_roles = ["bastion"]
// A config error is thrown as a list of messages; heet reports it at the config's place.

const KNOWN = [
  "max_count_per_role",
  "max_size",
  "max_size_except",
  "require_tags",
  "closed_ports",
  "open_roles",
];
const SMALL = ["nano", "micro", "small", "medium", "large", "xlarge"];

let policy = {};

// Rank of an instance size (`t3.<size>`); undefined for sizes this plugin does not know.
function sizeRank(size) {
  const i = SMALL.indexOf(size);
  if (i >= 0) return i;
  if (size === "metal") return 10000;
  const m = /^([0-9]+)xlarge$/.exec(size);
  return m ? 5 + Number(m[1]) : undefined;
}

export const configure = {
  configure(json) {
    const config = JSON.parse(json);
    const errors = Object.keys(config)
      .filter((k) => !KNOWN.includes(k))
      .map((k) => `unknown field \`${k}\`, expected one of ${KNOWN.join(", ")}`);
    if (config.max_size !== undefined && sizeRank(config.max_size) === undefined) {
      errors.push(`max_size ${JSON.stringify(config.max_size)} is not an instance size such as "large"`);
    }
    if (errors.length > 0) throw errors;
    policy = config;
  },
};

export const guard = {
  validate(state) {
    const out = [];
    const violation = (rule, message, role) => out.push({ rule, message, role });

    if (policy.max_count_per_role !== undefined) {
      const max = policy.max_count_per_role;
      const counts = new Map();
      for (const i of state.instances) counts.set(i.role, (counts.get(i.role) || 0) + 1);
      for (const [role, n] of [...counts].sort()) {
        if (n > max) violation("max-count-per-role", `${n} instances, more than the ${max} allowed`, role);
      }
    }

    const except = policy.max_size_except || [];
    if (policy.max_size !== undefined && !except.includes(state.env)) {
      const max = policy.max_size;
      const maxRank = sizeRank(max);
      const seen = new Set();
      for (const i of state.instances) {
        const dot = i.instanceType.indexOf(".");
        const rank = sizeRank(dot >= 0 ? i.instanceType.slice(dot + 1) : "");
        const key = `${i.role} ${i.instanceType}`;
        if ((rank === undefined || rank > maxRank) && !seen.has(key)) {
          seen.add(key);
          violation(
            "max-size",
            except.length === 0
              ? `${i.instanceType} is bigger than ${max}`
              : `${i.instanceType} is bigger than ${max}, allowed only in ${except.join(", ")}`,
            i.role,
          );
        }
      }
    }

    for (const key of policy.require_tags || []) {
      const roles = [];
      for (const i of state.instances) {
        if (!i.tags.some((t) => t.key === key) && roles[roles.length - 1] !== i.role) roles.push(i.role);
      }
      for (const role of roles) violation("require-tags", `instances lack the tag ${JSON.stringify(key)}`, role);
    }

    const closed = policy.closed_ports || [];
    const open = policy.open_roles || [];
    for (const rule of state.firewall) {
      if (rule.cidr === "0.0.0.0/0" && closed.includes(rule.port) && !open.includes(rule.role)) {
        violation(
          "closed-ports",
          `port ${rule.port} is open to 0.0.0.0/0; only ${open.length === 0 ? "no role" : open.join(", ")} may open it to the internet`,
          rule.role,
        );
      }
    }
    return out;
  },
};

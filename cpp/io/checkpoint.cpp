// Training checkpoints as one safetensors file: tensors under state_dict names, everything else
// as JSON strings in __metadata__ (doubles printed shortest-round-trip, so they reload bit-exact).
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "cpp/io/json_limits.h"
#include "ember/autograd.h"
#include "ember/checkpoint.h"
#include "ember/io.h"

namespace ember {
namespace {

using json = nlohmann::json;
using detail::json_brief;
constexpr const char* kFormat = "ember-checkpoint";
constexpr const char* kVersion = "1";
const std::string kOptPrefix = "optimizer.";
// Metadata JSON larger than this is refused (a long run's history is a few hundred KB).
constexpr size_t kMaxMetadataJsonBytes = size_t{16} << 20;

// JSON has no Inf/NaN: those go as strings ("inf", "-inf", "nan"), finite values as numbers.
json encode_double(double v) {
  if (std::isfinite(v)) return v;
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

double decode_double(const json& j, const std::string& what) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  throw Error("load_checkpoint: " + what + " is not a number: " + json_brief(j));
}

json encode_values(const std::map<std::string, double>& m) {
  json out = json::object();
  for (const auto& [k, v] : m) out[k] = encode_double(v);
  return out;
}

std::map<std::string, double> decode_values(const json& j, const std::string& what) {
  if (!j.is_object()) throw Error("load_checkpoint: " + what + " must be a JSON object, got " + json_brief(j));
  std::map<std::string, double> out;
  for (const auto& [k, v] : j.items()) out[k] = decode_double(v, what + "." + detail::quote_brief(k));
  return out;
}

json encode_scheduler(const optim::SchedulerState& s) {
  json lists = json::object();
  for (const auto& [k, v] : s.lists) {
    json arr = json::array();
    for (double x : v) arr.push_back(encode_double(x));
    lists[k] = arr;
  }
  json children = json::array();
  for (const auto& c : s.children) children.push_back(encode_scheduler(c));
  return {{"type", s.type}, {"values", encode_values(s.values)}, {"lists", lists}, {"children", children}};
}

optim::SchedulerState decode_scheduler(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error("load_checkpoint: the scheduler metadata lacks its \"type\": " + json_brief(j));
  optim::SchedulerState s;
  s.type = j["type"].get<std::string>();
  if (j.contains("values")) s.values = decode_values(j["values"], "scheduler values");
  if (j.contains("lists")) {
    for (const auto& [k, arr] : j["lists"].items()) {
      if (!arr.is_array()) throw Error("load_checkpoint: scheduler list " + detail::quote_brief(k) + " is not an array");
      std::vector<double>& out = s.lists[k];
      for (const json& x : arr) out.push_back(decode_double(x, "scheduler list " + detail::quote_brief(k)));
    }
  }
  // Recursion is bounded: parse_json_limited capped the nesting of what is walked here.
  if (j.contains("children")) {
    if (!j["children"].is_array())
      throw Error("load_checkpoint: the scheduler's \"children\" is not an array: " + json_brief(j["children"]));
    for (const json& c : j["children"]) s.children.push_back(decode_scheduler(c));
  }
  return s;
}

json parse_json(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  EMBER_CHECK(it != meta.end(), "load_checkpoint: ", path, " has no \"", key, "\" entry in its metadata");
  // The deepest metadata ember writes is a scheduler chain; 32 levels hold 15 nested schedulers.
  return detail::parse_json_limited(it->second, {.max_bytes = kMaxMetadataJsonBytes, .max_depth = 32},
                                    detail::str_cat("load_checkpoint: the \"", key, "\" metadata of ", path));
}

int64_t parse_int(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  EMBER_CHECK(it != meta.end(), "load_checkpoint: ", path, " has no \"", key, "\" entry in its metadata");
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  EMBER_CHECK(used == it->second.size() && used > 0, "load_checkpoint: \"", key, "\" in ", path,
              " is not an integer: ", detail::quote_brief(it->second));
  return v;
}

// A deep copy of a state, for rolling back a failed load.
optim::OptimizerState clone_state(optim::OptimizerState s) {
  for (auto& [k, t] : s.tensors) t = t.clone();
  return s;
}

}  // namespace

void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer& optimizer,
                     const optim::LRScheduler* scheduler, const TrainingState& state, const Generator& generator) {
  EMBER_CHECK(!path.empty(), "save_checkpoint: the path is empty");
  if (scheduler)
    EMBER_CHECK(&scheduler->optimizer() == &optimizer, "save_checkpoint: the ", scheduler->type_name(),
                " scheduler drives another optimizer than the one being saved");
  std::vector<std::pair<std::string, Tensor>> tensors = model.state_dict();
  for (const auto& [name, t] : tensors)
    EMBER_CHECK(name.rfind(kOptPrefix, 0) != 0, "save_checkpoint: the model's state_dict key \"", name,
                "\" starts with \"optimizer.\", which the checkpoint reserves for the optimizer's state; rename "
                "that submodule");
  const optim::OptimizerState os = optimizer.state_dict();
  for (const auto& [name, t] : os.tensors) tensors.emplace_back(kOptPrefix + name, t);

  json groups = json::array();
  for (const auto& g : os.param_groups) groups.push_back({{"options", encode_values(g.options)}, {"params", g.params}});
  std::map<std::string, std::string> meta{
      {"format", kFormat},
      {"format_version", kVersion},
      {"epoch", std::to_string(state.epoch)},
      {"step", std::to_string(state.step)},
      {"optimizer", json{{"type", os.type}, {"param_groups", groups}}.dump()},
      {"generator", json{{"seed", generator.seed()}, {"offset", generator.offset()}}.dump()},
      {"model", model.repr()},
      {"model_type", model.type_name()}};
  if (scheduler) meta["scheduler"] = encode_scheduler(scheduler->state_dict()).dump();
  for (const auto& [k, v] : state.extra) {
    EMBER_CHECK(!k.empty(), "save_checkpoint: TrainingState::extra has an empty key");
    meta["extra." + k] = v;
  }
  io::save_safetensors(path, tensors, meta);
}

TrainingState load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& optimizer,
                              optim::LRScheduler* scheduler, Generator& generator) {
  if (scheduler)
    EMBER_CHECK(&scheduler->optimizer() == &optimizer, "load_checkpoint: the ", scheduler->type_name(),
                " scheduler drives another optimizer than the one being loaded");
  io::SafetensorsFile file = io::load_safetensors(path, Device::cpu());
  const auto& meta = file.metadata;
  auto fmt = meta.find("format");
  EMBER_CHECK(fmt != meta.end() && fmt->second == kFormat, "load_checkpoint: ", path,
              " is a safetensors file but not an ember training checkpoint (its metadata has no format=\"", kFormat,
              "\"); load plain weights with io::load_safetensors and Module::load_state_dict");
  auto ver = meta.find("format_version");
  EMBER_CHECK(ver != meta.end() && ver->second == kVersion, "load_checkpoint: ", path, " has checkpoint format version ",
              ver == meta.end() ? "(none)" : detail::quote_brief(ver->second), " but this ember reads version ", kVersion);

  // Parse everything before touching any object.
  TrainingState ts;
  ts.epoch = parse_int(meta, "epoch", path);
  ts.step = parse_int(meta, "step", path);
  EMBER_CHECK(ts.epoch >= 0 && ts.step >= 0, "load_checkpoint: ", path, " stores epoch ", ts.epoch, " and step ",
              ts.step, "; counters are never negative (a damaged or hand-edited checkpoint)");
  for (const auto& [k, v] : meta)
    if (k.rfind("extra.", 0) == 0) ts.extra[k.substr(6)] = v;
  nn::StateDict model_state;
  optim::OptimizerState opt_state;
  for (auto& [name, t] : file.tensors) {
    if (name.rfind(kOptPrefix, 0) == 0) opt_state.tensors.emplace_back(name.substr(kOptPrefix.size()), t);
    else model_state.emplace_back(name, t);
  }
  const json oj = parse_json(meta, "optimizer", path);
  try {
    opt_state.type = oj.at("type").get<std::string>();
    for (const json& g : oj.at("param_groups")) {
      optim::OptimizerState::Group group;
      group.options = decode_values(g.at("options"), "optimizer options");
      group.params = g.at("params").get<std::vector<int64_t>>();
      opt_state.param_groups.push_back(std::move(group));
    }
  } catch (const json::exception& e) {
    throw Error(detail::str_cat("load_checkpoint: the optimizer metadata of ", path, " is malformed: ", e.what()));
  }
  std::optional<optim::SchedulerState> sched_state;
  if (scheduler) {
    EMBER_CHECK(meta.count("scheduler"), "load_checkpoint: ", path, " was saved without a scheduler, so it cannot "
                "restore the ", scheduler->type_name(), " passed in; pass nullptr");
    try {
      sched_state = decode_scheduler(parse_json(meta, "scheduler", path));
    } catch (const json::exception& e) {
      throw Error(detail::str_cat("load_checkpoint: the scheduler metadata of ", path, " is malformed: ", e.what()));
    }
  }
  uint64_t seed = 0, offset = 0;
  const json gj = parse_json(meta, "generator", path);
  try {
    // nlohmann casts a negative integer to uint64_t without complaint; the saved values never are.
    EMBER_CHECK(gj.at("seed").is_number_unsigned() && gj.at("offset").is_number_unsigned(), "load_checkpoint: the "
                "generator metadata of ", path, " is malformed: seed and offset must be non-negative integers, got ",
                json_brief(gj));
    seed = gj.at("seed").get<uint64_t>();
    offset = gj.at("offset").get<uint64_t>();
  } catch (const json::exception& e) {
    throw Error(detail::str_cat("load_checkpoint: the generator metadata of ", path, " is malformed: ", e.what()));
  }

  // A checkpoint restores a run exactly: every tensor must have the dtype of what it restores (a
  // file whose F32 was changed to I32 is refused, not cast).
  {
    std::vector<std::string> wrong;
    std::map<std::string, DType> own;
    for (const auto& [n, t] : model.state_dict()) own.emplace(n, t.dtype());
    for (const auto& [n, t] : model_state)
      if (auto it = own.find(n); it != own.end() && it->second != t.dtype())
        wrong.push_back(detail::str_cat("\"", n, "\" is ", dtype_name(t.dtype()), " but the model's is ",
                                        dtype_name(it->second)));
    const std::vector<Tensor> params = optimizer.parameters();
    for (const auto& [n, t] : opt_state.tensors) {
      // "state.<index>.<buffer>"; the step counters are integers by design, and malformed names are
      // left to Optimizer::load_state_dict, which lists them.
      const size_t dot = n.find('.', 6);
      if (n.rfind("state.", 0) != 0 || dot == std::string::npos || n.substr(dot + 1) == "step") continue;
      const std::string idx = n.substr(6, dot - 6);
      if (idx.empty() || idx.size() > 9 || idx.find_first_not_of("0123456789") != std::string::npos) continue;
      const size_t i = std::stoul(idx);
      if (i < params.size() && params[i].dtype() != t.dtype())
        wrong.push_back(detail::str_cat("\"", kOptPrefix, n, "\" is ", dtype_name(t.dtype()), " but parameter ", i,
                                        " is ", dtype_name(params[i].dtype())));
    }
    if (!wrong.empty()) {
      std::string list;
      for (size_t k = 0; k < wrong.size() && k < 8; ++k) list += "\n  " + wrong[k];
      if (wrong.size() > 8) list += detail::str_cat("\n  (and ", wrong.size() - 8, " more)");
      throw Error(detail::str_cat("load_checkpoint: ", path, " holds tensors of another dtype than the objects they "
                                  "restore (a damaged or edited file; nothing was changed):", list));
    }
  }

  // Apply, rolling every object back if one part does not fit.
  nn::StateDict model_backup;
  {
    autograd::NoGradGuard no_grad;
    for (auto& [n, t] : model.state_dict()) model_backup.emplace_back(n, t.clone());
  }
  const optim::OptimizerState opt_backup = clone_state(optimizer.state_dict());
  const std::optional<optim::SchedulerState> sched_backup =
      scheduler ? std::optional(scheduler->state_dict()) : std::nullopt;
  try {
    model.load_state_dict(model_state, /*strict=*/true);
    optimizer.load_state_dict(opt_state);
    if (scheduler) scheduler->load_state_dict(*sched_state);
  } catch (const Error& e) {
    model.load_state_dict(model_backup);
    optimizer.load_state_dict(opt_backup);
    if (scheduler) scheduler->load_state_dict(*sched_backup);
    throw Error(detail::str_cat("load_checkpoint: ", path, " does not fit the objects passed in (they are left as "
                                "they were): ", e.what()));
  }
  generator.set_state(seed, offset);
  return ts;
}

}  // namespace ember

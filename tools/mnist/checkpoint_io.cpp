// ember-mnist checkpoints: ember::save_checkpoint with the trainer's progress and model flags in
// TrainingState::extra, so a checkpoint of another model shape is refused with a clear message.
#include "checkpoint_io.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "cpp/io/json_limits.h"
#include "ember/checkpoint.h"
#include "ember/io.h"

namespace mnist {
namespace {

using ember::Error;

nlohmann::json history_json(const std::vector<EpochStats>& h) {
  nlohmann::json a = nlohmann::json::array();
  for (const EpochStats& s : h) {
    nlohmann::json row = {s.epoch, s.train_loss, s.train_acc, s.test_loss, s.test_acc, s.seconds, s.images_per_s, s.lr};
    if (!std::isnan(s.val_acc)) {  // --val-split: two more numbers (rows of older files have 8)
      row.push_back(s.val_loss);
      row.push_back(s.val_acc);
    }
    a.push_back(row);
  }
  return a;
}

// The trainer's per-epoch history, as history_json wrote it: an array of 8-number rows. Anything
// else in the file is refused with ember::Error (never an escaping nlohmann exception).
std::vector<EpochStats> history_from(const std::string& text, const std::string& path) {
  const std::string who = "checkpoint " + path + ": extra.history";
  const nlohmann::json rows = ember::detail::parse_json_limited(text, {.max_bytes = size_t{16} << 20, .max_depth = 2}, who);
  if (!rows.is_array()) throw Error(who + " must be an array of epoch rows, got " + ember::detail::json_brief(rows));
  std::vector<EpochStats> h;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& e = rows[i];
    // A non-finite figure was written as null (JSON has no NaN); it reads back as NaN.
    bool ok = e.is_array() && (e.size() == 8 || e.size() == 10) && e[0].is_number_integer();
    for (size_t k = 1; ok && k < e.size(); ++k) ok = e[k].is_number() || e[k].is_null();
    if (!ok)
      throw Error(ember::detail::str_cat(who, " row ", i, " must be [epoch, train_loss, train_acc, test_loss, test_acc, "
                                         "seconds, images_per_s, lr[, val_loss, val_acc]] (an integer, then 7 or 9 numbers), got ",
                                         ember::detail::json_brief(e)));
    auto number = [&](size_t k) { return e[k].is_null() ? std::nan("") : e[k].get<double>(); };
    EpochStats s;
    s.epoch = e[0].get<int64_t>();
    s.train_loss = number(1);
    s.train_acc = number(2);
    s.test_loss = number(3);
    s.test_acc = number(4);
    s.seconds = number(5);
    s.images_per_s = number(6);
    s.lr = number(7);
    if (e.size() == 10) {
      s.val_loss = number(8);
      s.val_acc = number(9);
    }
    h.push_back(s);
  }
  return h;
}

std::string get(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end())
    throw Error("checkpoint " + path + " has no '" + key + "' entry: it was not written by ember-mnist --save");
  return it->second;
}

// The checkpoint's model must be the one these flags build.
void check_model_flags(const std::map<std::string, std::string>& meta, const std::string& path, const Config& cfg) {
  const std::string model = get(meta, "extra.model", path), hidden = get(meta, "extra.hidden", path);
  // --hidden shapes the MLP only; the convnets have fixed widths.
  const bool same = model == cfg.model && (cfg.model != "mlp" || hidden == std::to_string(cfg.hidden));
  if (!same) {
    auto name = [](const std::string& m, const std::string& h) { return m == "mlp" ? "mlp with --hidden " + h : m; };
    throw Error("checkpoint " + path + " holds a " + name(model, hidden) + ", but this run builds a " +
                name(cfg.model, std::to_string(cfg.hidden)) + "; pass the flags it was trained with (--model, --hidden)");
  }
}

// The saved run's settings against this run's: every difference, one per line.
void check_run_settings(const std::map<std::string, std::string>& meta, const std::string& path,
                        const RunSettings& settings) {
  const std::string who = "checkpoint " + path + ": extra.run";
  const nlohmann::json saved =
      ember::detail::parse_json_limited(get(meta, "extra.run", path), {.max_bytes = 1 << 16, .max_depth = 1}, who);
  if (!saved.is_object()) throw Error(who + " must be an object, got " + ember::detail::json_brief(saved));
  std::string diffs;
  for (const auto& [flag, value] : settings) {
    auto it = saved.find(flag);
    const std::string was = it == saved.end() ? "(not recorded)"
                            : it->is_string() ? ember::detail::quote_brief(it->get<std::string>())
                                              : ember::detail::json_brief(*it);
    if (it == saved.end() || !it->is_string() || it->get<std::string>() != value)
      diffs += "\n  " + flag + ": saved " + was + ", this run '" + value + "'";
  }
  // A setting recorded only when it is not the default (--l1, --aug-hflip, --resnet-fc-dropout, ...)
  // that the saved run had and this one does not.
  for (const auto& [flag, value] : saved.items()) {
    const bool here = std::any_of(settings.begin(), settings.end(), [&](const auto& s) { return s.first == flag; });
    if (!here)
      diffs += "\n  " + flag + ": saved " +
               (value.is_string() ? ember::detail::quote_brief(value.get<std::string>()) : ember::detail::json_brief(value)) +
               ", this run not given (its default)";
  }
  if (!diffs.empty())
    throw Error("checkpoint " + path + " was saved by a run with other settings, so resuming would not continue it:" +
                diffs + "\npass the saved values; on --resume only --epochs (with --scheduler none), --device, "
                "--threads, --deterministic, --save, --metrics-out and --quiet may change");
}

}  // namespace

void save_training_checkpoint(const std::string& path, const ember::nn::Module& model, const ember::optim::Optimizer& opt,
                              const ember::optim::LRScheduler* sched, const Progress& progress, const Config& cfg,
                              const RunSettings& settings) {
  ember::TrainingState state;
  state.epoch = progress.epoch;
  state.step = progress.step_in_epoch;
  state.extra = {{"model", cfg.model},
                 {"hidden", std::to_string(cfg.hidden)},
                 {"dataset", cfg.data_dir.empty() ? cfg.dataset : cfg.data_dir},
                 {"optimizer", cfg.optimizer},
                 {"scheduler", cfg.scheduler},
                 {"history", history_json(progress.history).dump()}};
  nlohmann::json run = nlohmann::json::object();
  for (const auto& [flag, value] : settings) run[flag] = value;
  state.extra["run"] = run.dump();
  ember::save_checkpoint(path, model, opt, sched, state);
}

void load_training_checkpoint(const std::string& path, ember::nn::Module& model, ember::optim::Optimizer* opt,
                              ember::optim::LRScheduler* sched, Progress& progress, const Config& cfg,
                              const RunSettings& settings) {
  // Read the metadata first: a wrong model shape gets a message about flags, not tensor shapes.
  ember::io::SafetensorsFile file = ember::io::load_safetensors(path);
  check_model_flags(file.metadata, path, cfg);
  if (opt) {
    const std::string saved_opt = get(file.metadata, "extra.optimizer", path);
    if (saved_opt != cfg.optimizer)
      throw Error("checkpoint " + path + " was trained with --optimizer " + saved_opt + ", this run uses " +
                  cfg.optimizer + "; pass --optimizer " + saved_opt + " to resume it");
    const std::string saved_sched = get(file.metadata, "extra.scheduler", path);
    if (saved_sched != cfg.scheduler)
      throw Error("checkpoint " + path + " was trained with --scheduler " + saved_sched + ", this run uses " +
                  cfg.scheduler + "; pass --scheduler " + saved_sched + " to resume it");
    check_run_settings(file.metadata, path, settings);
    ember::TrainingState st = ember::load_checkpoint(path, model, *opt, sched);
    progress.epoch = st.epoch;
    progress.step_in_epoch = st.step;
    progress.history = history_from(get(file.metadata, "extra.history", path), path);
    return;
  }
  // Evaluation: the model's tensors alone, onto the model's device.
  ember::nn::StateDict weights;
  for (auto& [name, t] : file.tensors)
    if (name.rfind("optimizer.", 0) != 0) weights.emplace_back(name, t);
  model.load_state_dict(weights, true);
}

}  // namespace mnist

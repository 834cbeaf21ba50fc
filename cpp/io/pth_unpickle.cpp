// The restricted unpickler for torch.save's data.pkl: a stack machine over the opcodes and globals
// a state_dict needs, which interprets the allowed callables by name and never calls anything.
#include "cpp/io/pth_unpickle.h"

#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>

#include "cpp/core/text_brief.h"
#include "ember/error.h"

namespace ember::io::detail {

namespace {

using ember::detail::cut_brief;
using ember::detail::str_cat;

constexpr int kMaxDepth = 32;      // values nested deeper are refused (a state_dict needs about 5)
constexpr size_t kMaxMarks = 32;   // open MARKs at once
constexpr size_t kMaxDims = 64;    // a tensor's dimensions

enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };
enum class Global { OrderedDict, RebuildTensorV2, RebuildParameter, StorageType };

struct Value;
using VP = std::shared_ptr<Value>;

struct Value {
  Kind kind = Kind::None;
  int64_t i = 0;  // Bool, Int; Storage/Tensor: index; Global: the Global
  double f = 0;
  std::string s;
  std::vector<VP> items;                          // Tuple, List
  std::vector<std::pair<std::string, VP>> dict;   // Dict, in insertion order
  std::unordered_map<std::string, size_t> index;  // Dict: key -> position in dict
  DType dtype = DType::F32;                       // Global StorageType
  int depth = 1;
  // Set once the value sits inside another: it may no longer change, so no container can come to
  // hold itself (the shared pointers stay acyclic and free themselves).
  bool contained = false;
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

struct StorageName {
  const char* name;
  DType dtype;
};
constexpr StorageName kStorages[] = {{"FloatStorage", DType::F32},    {"DoubleStorage", DType::F64},
                                     {"HalfStorage", DType::F16},     {"BFloat16Storage", DType::BF16},
                                     {"LongStorage", DType::I64},     {"IntStorage", DType::I32},
                                     {"ByteStorage", DType::U8},      {"BoolStorage", DType::Bool}};

// Names of opcodes ember refuses, for the message (the pickle protocol's own names).
const char* opcode_name(unsigned char op) {
  switch (op) {
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 'P': return "PERSID";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 'F': return "FLOAT";
    case 0x8b: return "LONG4";
    case '2': return "DUP";
    case 'g': return "GET";
    case 'p': return "PUT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8e: return "BINBYTES8";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 'l': return "LIST";
    case 'd': return "DICT";
    case '1': return "POP_MARK";
    default: return "unknown opcode";
  }
}

class Unpickler {
 public:
  Unpickler(std::string_view p, const std::string& who) : p_(p), who_(who) {}

  PickledStateDict run() {
    while (true) {
      const size_t at = pos_;
      const unsigned char op = byte();
      switch (op) {
        case 0x80: {  // PROTO
          const unsigned char v = byte();
          if (v < 2 || v > 5) fail(at, "pickle protocol ", int(v), " (torch.save writes 2; 2 to 5 are read)");
          break;
        }
        case 0x95: take(8); break;  // FRAME: a size hint only
        case '.': return finish(at);
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = line(at), name = line(at);
          push(global(at, module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          VP name = pop(at), module = pop(at);
          if (module->kind != Kind::Str || name->kind != Kind::Str) fail(at, "STACK_GLOBAL needs two strings");
          push(global(at, module->s, name->s));
          break;
        }
        case 'R': {  // REDUCE
          VP args = pop(at), fn = pop(at);
          push(reduce(at, fn, args));
          break;
        }
        case 'b': {  // BUILD: only the state_dict's _metadata attribute on an OrderedDict, dropped
          VP state = pop(at);
          VP obj = top(at);
          if (obj->kind != Kind::Dict || (state->kind != Kind::Dict && state->kind != Kind::None))
            fail(at, "BUILD on a ", kind_name(obj->kind), " with a ", kind_name(state->kind),
                 " state (only an OrderedDict's attribute dict, as state_dict's _metadata, is accepted)");
          break;
        }
        case '(':  // MARK
          if (marks_.size() >= kMaxMarks) fail(at, "more than ", kMaxMarks, " nested MARKs");
          marks_.push_back(stack_.size());
          break;
        case ')': push(make(Kind::Tuple)); break;
        case 't': push(tuple(at, pop_mark(at))); break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84u;
          if (stack_.size() < n + floor()) fail(at, "TUPLE", n, " on a stack of ", stack_.size() - floor());
          std::vector<VP> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(tuple(at, std::move(items)));
          break;
        }
        case ']': push(make(Kind::List)); break;
        case '}': push(make(Kind::Dict)); break;
        case 'a': {  // APPEND
          VP v = pop(at);
          append(at, top(at), {v});
          break;
        }
        case 'e': {  // APPENDS
          std::vector<VP> items = pop_mark(at);
          append(at, top(at), items);
          break;
        }
        case 's': {  // SETITEM
          VP v = pop(at), k = pop(at);
          set_items(at, top(at), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<VP> items = pop_mark(at);
          set_items(at, top(at), items);
          break;
        }
        case 'q': memo_put(at, byte()); break;        // BINPUT
        case 'r': memo_put(at, u32()); break;         // LONG_BINPUT
        case 0x94: memo_put(at, memo_.size()); break;  // MEMOIZE
        case 'h': memo_get(at, byte()); break;        // BINGET
        case 'j': memo_get(at, u32()); break;         // LONG_BINGET
        case 'J': push(integer(static_cast<int32_t>(u32()))); break;  // BININT
        case 'K': push(integer(byte())); break;                       // BININT1
        case 'M': {                                                   // BININT2
          const uint32_t lo = byte();
          push(integer(lo | (static_cast<uint32_t>(byte()) << 8)));
          break;
        }
        case 0x8a: {  // LONG1: n-byte little-endian two's complement
          const unsigned char n = byte();
          if (n > 8) fail(at, "LONG1 integer of ", int(n), " bytes does not fit in 64 bits");
          const unsigned char* b = take(n);
          uint64_t v = 0;
          for (int k = n - 1; k >= 0; --k) v = (v << 8) | b[k];
          if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
          push(integer(static_cast<int64_t>(v)));
          break;
        }
        case 'N': push(make(Kind::None)); break;
        case 0x88:
        case 0x89: {
          VP v = make(Kind::Bool);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const unsigned char* b = take(8);
          uint64_t v = 0;
          for (int k = 0; k < 8; ++k) v = (v << 8) | b[k];
          VP x = make(Kind::Float);
          x->f = std::bit_cast<double>(v);
          push(x);
          break;
        }
        case 'X': push(str(at, u32())); break;  // BINUNICODE
        case 0x8c: push(str(at, byte())); break;  // SHORT_BINUNICODE
        case 0x8d: {                             // BINUNICODE8
          const unsigned char* b = take(8);
          uint64_t n = 0;
          for (int k = 7; k >= 0; --k) n = (n << 8) | b[k];
          push(str(at, n));
          break;
        }
        case 'Q': {  // BINPERSID
          VP pid = pop(at);
          push(storage(at, pid));
          break;
        }
        case '0': pop(at); break;  // POP
        default:
          fail(at, "opcode 0x", hex(op), " (", opcode_name(op), ") is not allowed in a state_dict pickle: ember loads "
               "only tensors in (Ordered)dicts, as torch.load(weights_only=True)");
      }
    }
  }

 private:
  template <class... Args> [[noreturn]] void fail(size_t at, const Args&... args) const {
    throw Error(str_cat(who_, ": data.pkl byte ", at, ": ", args...));
  }
  static std::string hex(unsigned char c) {
    const char* d = "0123456789abcdef";
    return {d[c >> 4], d[c & 15]};
  }

  unsigned char byte() {
    if (pos_ >= p_.size()) fail(pos_, "the pickle ends without STOP (truncated)");
    return static_cast<unsigned char>(p_[pos_++]);
  }
  const unsigned char* take(uint64_t n) {
    if (n > p_.size() - pos_) fail(pos_, "a ", n, "-byte argument runs past the pickle's end (", p_.size(), " bytes): truncated");
    const auto* b = reinterpret_cast<const unsigned char*>(p_.data() + pos_);
    pos_ += n;
    return b;
  }
  uint32_t u32() {
    const unsigned char* b = take(4);
    return b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string line(size_t at) {
    const size_t end = p_.find('\n', pos_);
    if (end == std::string_view::npos || end - pos_ > 256) fail(at, "GLOBAL without a newline-terminated name");
    std::string s(p_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  VP make(Kind k) {
    auto v = std::make_shared<Value>();
    v->kind = k;
    return v;
  }
  VP integer(int64_t i) {
    VP v = make(Kind::Int);
    v->i = i;
    return v;
  }
  VP str(size_t at, uint64_t n) {
    const unsigned char* b = take(n);
    VP v = make(Kind::Str);
    v->s.assign(reinterpret_cast<const char*>(b), n);
    (void)at;
    return v;
  }

  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(VP v) { stack_.push_back(std::move(v)); }
  VP pop(size_t at) {
    if (stack_.size() <= floor()) fail(at, "stack underflow");
    VP v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  VP& top(size_t at) {
    if (stack_.size() <= floor()) fail(at, "stack underflow");
    return stack_.back();
  }
  std::vector<VP> pop_mark(size_t at) {
    if (marks_.empty()) fail(at, "no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<VP> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  // `child` goes inside `parent`: it freezes, and the parent's depth follows.
  void adopt(size_t at, Value& parent, const VP& child) {
    if (child.get() == &parent) fail(at, "a container cannot hold itself");
    child->contained = true;
    if (child->depth + 1 > parent.depth) parent.depth = child->depth + 1;
    if (parent.depth > kMaxDepth) fail(at, "values nested deeper than ", kMaxDepth, " levels");
  }
  VP tuple(size_t at, std::vector<VP> items) {
    VP t = make(Kind::Tuple);
    for (const VP& c : items) adopt(at, *t, c);
    t->items = std::move(items);
    return t;
  }
  void mutable_check(size_t at, const VP& c, Kind k, const char* op) {
    if (c->kind != k) fail(at, op, " on a ", kind_name(c->kind), ", expected a ", kind_name(k));
    if (c->contained) fail(at, op, " on a ", kind_name(k), " already inside another value (recursive structure)");
  }
  void append(size_t at, const VP& list, const std::vector<VP>& items) {
    mutable_check(at, list, Kind::List, "APPEND");
    for (const VP& c : items) {
      adopt(at, *list, c);
      list->items.push_back(c);
    }
  }
  void set_items(size_t at, const VP& d, const std::vector<VP>& kv) {
    mutable_check(at, d, Kind::Dict, "SETITEM");
    if (kv.size() % 2) fail(at, "SETITEMS with an odd number (", kv.size(), ") of keys and values");
    for (size_t k = 0; k < kv.size(); k += 2) {
      if (kv[k]->kind != Kind::Str) fail(at, "dict key of type ", kind_name(kv[k]->kind), " (a state_dict has str keys)");
      adopt(at, *d, kv[k + 1]);
      auto [it, fresh] = d->index.emplace(kv[k]->s, d->dict.size());
      if (fresh) d->dict.emplace_back(kv[k]->s, kv[k + 1]);
      else d->dict[it->second].second = kv[k + 1];  // Python: a repeated key keeps its place, takes the new value
    }
  }

  void memo_put(size_t at, uint64_t idx) {
    if (stack_.size() <= floor()) fail(at, "PUT on an empty stack");
    if (memo_.size() >= p_.size()) fail(at, "more memo entries than the pickle has bytes");
    memo_[idx] = stack_.back();
  }
  void memo_get(size_t at, uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail(at, "GET of memo entry ", idx, ", which was never PUT");
    push(it->second);
  }

  VP global(size_t at, const std::string& module, const std::string& name) {
    VP g = make(Kind::Global);
    if (module == "collections" && name == "OrderedDict") {
      g->i = static_cast<int64_t>(Global::OrderedDict);
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g->i = static_cast<int64_t>(Global::RebuildTensorV2);
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      g->i = static_cast<int64_t>(Global::RebuildParameter);
    } else {
      for (const StorageName& s : kStorages)
        if (module == "torch" && name == s.name) {
          g->i = static_cast<int64_t>(Global::StorageType);
          g->dtype = s.dtype;
          g->s = name;
          return g;
        }
      fail(at, "global '", cut_brief(module), ".", cut_brief(name), "' is not allowed: ember loads state_dicts only "
           "(collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter, torch.<Type>Storage); "
           "save model.state_dict() rather than objects, and never load files you do not trust into Python either");
    }
    g->s = module + "." + name;
    return g;
  }

  const VP& arg(size_t at, const VP& args, size_t k, Kind kind, const char* fn, const char* what) {
    if (k >= args->items.size() || args->items[k]->kind != kind)
      fail(at, fn, ": argument ", k, " (", what, ") must be a ", kind_name(kind),
           k < args->items.size() ? str_cat(", not a ", kind_name(args->items[k]->kind)) : std::string(", missing"));
    return args->items[k];
  }
  std::vector<int64_t> ints(size_t at, const VP& t, const char* what) {
    if (t->items.size() > kMaxDims) fail(at, what, " has ", t->items.size(), " dimensions (at most ", kMaxDims, ")");
    std::vector<int64_t> out;
    for (const VP& v : t->items) {
      if (v->kind != Kind::Int) fail(at, what, " holds a ", kind_name(v->kind), ", expected ints");
      if (v->i < 0) fail(at, what, " holds the negative value ", v->i, "; sizes and strides must be >= 0");
      out.push_back(v->i);
    }
    return out;
  }
  bool empty_hooks(const VP& v) { return v->kind == Kind::Dict && v->dict.empty(); }

  VP reduce(size_t at, const VP& fn, const VP& args) {
    if (fn->kind != Kind::Global)
      fail(at, "REDUCE on a ", kind_name(fn->kind), ": only the allowed globals may be called");
    if (args->kind != Kind::Tuple) fail(at, "REDUCE with ", kind_name(args->kind), " arguments, expected a tuple");
    switch (static_cast<Global>(fn->i)) {
      case Global::OrderedDict:
        if (!args->items.empty()) fail(at, "collections.OrderedDict called with arguments (only OrderedDict() is read)");
        return make(Kind::Dict);
      case Global::RebuildTensorV2: {
        const char* f = "torch._utils._rebuild_tensor_v2";
        if (args->items.size() != 6 && args->items.size() != 7)
          fail(at, f, " takes 6 or 7 arguments (storage, offset, size, stride, requires_grad, hooks[, metadata]), got ",
               args->items.size());
        const VP& st = arg(at, args, 0, Kind::Storage, f, "storage");
        const VP& off = arg(at, args, 1, Kind::Int, f, "storage offset");
        const VP& size = arg(at, args, 2, Kind::Tuple, f, "size");
        const VP& stride = arg(at, args, 3, Kind::Tuple, f, "stride");
        arg(at, args, 4, Kind::Bool, f, "requires_grad");
        if (!empty_hooks(args->items[5])) fail(at, f, ": backward hooks must be an empty OrderedDict");
        if (args->items.size() == 7 && args->items[6]->kind != Kind::None && args->items[6]->kind != Kind::Dict)
          fail(at, f, ": metadata must be None or a dict");
        if (off->i < 0) fail(at, f, ": negative storage offset ", off->i);
        PickledTensor t;
        t.storage = static_cast<size_t>(st->i);
        t.offset = off->i;
        t.size = ints(at, size, "size");
        t.stride = ints(at, stride, "stride");
        if (t.size.size() != t.stride.size())
          fail(at, f, ": size has ", t.size.size(), " dimensions but stride has ", t.stride.size());
        VP v = make(Kind::Tensor);
        v->i = static_cast<int64_t>(tensors_.size());
        tensors_.push_back(std::move(t));
        return v;
      }
      case Global::RebuildParameter: {
        const char* f = "torch._utils._rebuild_parameter";
        if (args->items.size() != 3) fail(at, f, " takes 3 arguments (data, requires_grad, hooks), got ", args->items.size());
        const VP& data = arg(at, args, 0, Kind::Tensor, f, "data");
        arg(at, args, 1, Kind::Bool, f, "requires_grad");
        if (!empty_hooks(args->items[2])) fail(at, f, ": backward hooks must be an empty OrderedDict");
        return data;
      }
      case Global::StorageType:
        fail(at, "torch.", fn->s, " called through REDUCE: storages are only read as persistent ids");
    }
    fail(at, "REDUCE on an unknown global");
  }

  VP storage(size_t at, const VP& pid) {
    if (pid->kind != Kind::Tuple || pid->items.size() != 5 || pid->items[0]->kind != Kind::Str ||
        pid->items[0]->s != "storage")
      fail(at, "persistent id must be ('storage', <Type>Storage, key, location, numel)");
    const VP& type = pid->items[1];
    if (type->kind != Kind::Global || static_cast<Global>(type->i) != Global::StorageType)
      fail(at, "persistent id names a ", kind_name(type->kind), " where a torch.<Type>Storage belongs");
    if (pid->items[2]->kind != Kind::Str || pid->items[3]->kind != Kind::Str || pid->items[4]->kind != Kind::Int)
      fail(at, "persistent id: key and location must be strings and numel an int");
    const std::string& key = pid->items[2]->s;
    const int64_t numel = pid->items[4]->i;
    if (numel < 0) fail(at, "storage '", cut_brief(key), "' has a negative element count ", numel);
    auto [it, fresh] = storage_index_.emplace(key, storages_.size());
    if (fresh) {
      storages_.push_back({key, type->dtype, numel});
    } else {
      const PickledStorage& s = storages_[it->second];
      if (s.dtype != type->dtype || s.numel != numel)
        fail(at, "storage '", cut_brief(key), "' appears as ", dtype_name(s.dtype), "[", s.numel, "] and as ",
             dtype_name(type->dtype), "[", numel, "]");
    }
    VP v = make(Kind::Storage);
    v->i = static_cast<int64_t>(it->second);
    return v;
  }

  PickledStateDict finish(size_t at) {
    if (!marks_.empty()) fail(at, "STOP with an open MARK");
    if (stack_.size() != 1) fail(at, "STOP with ", stack_.size(), " values on the stack, expected 1");
    const VP& top = stack_.back();
    if (top->kind != Kind::Dict)
      fail(at, "the file holds a ", kind_name(top->kind), ", not a state_dict (a dict of tensors); save "
           "model.state_dict()");
    PickledStateDict out;
    for (const auto& [name, v] : top->dict) {
      if (v->kind != Kind::Tensor)
        fail(at, "state_dict entry '", cut_brief(name), "' is a ", kind_name(v->kind),
             ", not a tensor (nested checkpoints: save the model's state_dict() itself)");
      PickledTensor t = tensors_[static_cast<size_t>(v->i)];
      t.name = name;
      out.tensors.push_back(std::move(t));
    }
    out.storages = std::move(storages_);
    return out;
  }

  std::string_view p_;
  const std::string& who_;
  size_t pos_ = 0;
  std::vector<VP> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, VP> memo_;
  std::vector<PickledTensor> tensors_;
  std::vector<PickledStorage> storages_;
  std::unordered_map<std::string, size_t> storage_index_;
};

}  // namespace

PickledStateDict unpickle_state_dict(std::string_view pickle, const std::string& who) {
  return Unpickler(pickle, who).run();
}

}  // namespace ember::io::detail

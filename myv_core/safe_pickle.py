"""A pickle module for torch.load that returns the tensors of any checkpoint and runs nothing of it.

    torch.load(path, weights_only=False, pickle_module=safe_pickle)

Training runs pickle much more than tensors beside the state dict: Lightning's loop and callback
state (older versions key it by the callback class), numpy scalars for monitored scores (under numpy
1 or numpy 2 module names), omegaconf DictConfigs for hyper-parameters, optimizer and scheduler
states, pathlib paths, argparse Namespaces. This unpickler reads all of them without importing or
calling any of it:

- a global that PyTorch's own weights-only unpickler allows
  (torch._weights_only_unpickler._get_allowed_globals(): the tensor and storage rebuild functions,
  dtypes, torch.Size, torch.device, collections.OrderedDict, set, ...) is the real object;
- a global that only serves to run a command, evaluate or import code, or open files and sockets
  (os.system, subprocess.Popen, builtins.eval, ...; see `code_running`) is refused with
  RefusedGlobal naming it: a training run never writes those, so such a file is hostile;
- every other global becomes an inert stand-in class (`Unpickled`): calling it, building it or
  filling it only records the data; nothing of the original is imported, looked up or called.
  builtins.getattr, which protocol 2 uses to name nested classes, resolves to such a stand-in for
  the dotted name, by name only.

The operations that could reach into the process are narrowed as PyTorch's weights-only unpickler
narrows them: calls and object creation only of allowed globals or stand-ins; BUILD only on tensors,
Parameters, OrderedDicts, Counters and stand-ins; items only into dicts, lists, sets and stand-ins;
persistent ids only for storages; no copyreg extension codes. Anything else raises
ForbiddenOperation. The pure-Python unpickler is used so that each of these opcodes can be
replaced; the pickle of a checkpoint holds only metadata (tensor data is read by torch), so it is
small and quick to interpret.
"""

import _compat_pickle
import pickle
from collections import Counter, OrderedDict

import torch
from torch._weights_only_unpickler import _get_allowed_globals

# Modules (with their submodules) that exist to run processes, evaluate or import code, or reach
# files, sockets and the interpreter's state.
CODE_RUNNING_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "pty", "shutil", "socket", "importlib",
    "runpy", "code", "codeop", "ctypes", "multiprocessing", "webbrowser", "pickle", "_pickle", "marshal",
    "pdb", "shelve", "tempfile", "io", "_io", "signal", "threading", "_thread", "asyncio", "commands",
    "popen2", "dill", "cloudpickle",
})
CODE_RUNNING_BUILTINS = frozenset({
    "eval", "exec", "execfile", "compile", "__import__", "__build_class__", "open", "input", "breakpoint",
    "globals", "locals", "vars", "setattr", "delattr", "apply", "reload", "exit", "quit", "help",
})
CODE_RUNNING_GLOBALS = frozenset({
    "operator.attrgetter", "operator.methodcaller", "types.CodeType", "types.FunctionType",
    "types.LambdaType", "types.MethodType", "types.ModuleType",
})
# Last parts of a dotted name that run commands or code whatever module they are reached through
# (posixpath.os.system, a re-export, ...).
CODE_RUNNING_ATTRIBUTES = frozenset({
    "system", "popen", "Popen", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp",
    "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp", "startfile", "check_call", "check_output", "getoutput",
    "getstatusoutput", "run_path", "run_module", "import_module", "load_module", "eval", "exec",
    "__import__",
})


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that can only serve to run code; nothing was called."""

    def __init__(self, global_name):
        super().__init__(f"the pickle names {global_name}, which runs code")
        self.global_name = global_name


class ForbiddenOperation(pickle.UnpicklingError):
    """The pickle asks for an operation a checkpoint never needs (a call of a real object, ...)."""


def code_running(global_name):
    """Whether a dotted global name (module.qualname) is one whose only use in a pickle is to run code."""
    module, _, name = global_name.rpartition(".")
    root = global_name.split(".", 1)[0]
    if root in CODE_RUNNING_MODULES or global_name in CODE_RUNNING_GLOBALS:
        return True
    if module in ("builtins", "__builtin__") and name in CODE_RUNNING_BUILTINS:
        return True
    return name in CODE_RUNNING_ATTRIBUTES


class Unpickled:
    """Stands in for a global of the file: records what the pickle gives it, calls nothing.

    `args`/`kwargs`: the arguments it was called or created with; `state`: what BUILD gave it;
    `entries`: (key, value) pairs set on it; `elements`: what was appended or added to it.
    """

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.entries, self.elements = args, kwargs, None, [], []
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):  # a REDUCE whose callable is an earlier result
        return type(self)(*args, **kwargs)

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.entries.append((key, value))

    def append(self, item):
        self.elements.append(item)

    def extend(self, items):
        self.elements.extend(items)

    add = append

    def __repr__(self):
        return f"<{self.global_name} from the file, not loaded>"


def _is_stand_in(obj):
    return isinstance(obj, Unpickled) or (isinstance(obj, type) and issubclass(obj, Unpickled))


def _allowed(obj):
    return id(obj) in _ALLOWED_IDS


_ALLOWED = _get_allowed_globals()  # torch keeps this dict (lru_cache), so the ids stay valid
_ALLOWED_IDS = frozenset(id(real) for real in _ALLOWED.values())


class Unpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler with find_class and every reaching opcode replaced (see module doc)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._stand_ins = {}
        self._getattr = self._getattr_by_name  # one bound method, so calls to it can be recognised

    def find_class(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        global_name = f"{module}.{name}"
        if code_running(global_name):
            raise RefusedGlobal(global_name)
        real = _ALLOWED.get(global_name)
        if real is not None:
            return real
        if global_name == "builtins.getattr":
            return self._getattr
        return self._stand_in(global_name)

    def _stand_in(self, global_name):
        if global_name not in self._stand_ins:
            short = global_name.rsplit(".", 1)[-1] or "Unpickled"
            self._stand_ins[global_name] = type(short, (Unpickled,), {
                "global_name": global_name, "__module__": __name__, "__qualname__": f"Unpickled[{global_name}]"})
        return self._stand_ins[global_name]

    def _getattr_by_name(self, owner, name, *default):
        """builtins.getattr of a stand-in class: the stand-in of the dotted name, checked like a global."""
        if not (isinstance(owner, type) and issubclass(owner, Unpickled)) or type(name) is not str:
            raise ForbiddenOperation(f"looks up {name!r} on {owner!r} with getattr (only nested classes are named that way)")
        global_name = f"{owner.global_name}.{name}"
        if code_running(global_name):
            raise RefusedGlobal(global_name)
        return self._stand_in(global_name)

    def _call(self, func, args, kwargs=None):
        if _is_stand_in(func) or func is self._getattr or _allowed(func):
            return func(*args, **(kwargs or {}))
        raise ForbiddenOperation(f"calls {func!r}, not a global it names")

    def _new(self, cls, args, kwargs=None):
        if cls is torch.nn.Parameter:
            return torch.nn.Parameter(*args, **(kwargs or {}))
        if isinstance(cls, type) and (issubclass(cls, Unpickled) or _allowed(cls)):
            return cls.__new__(cls, *args, **(kwargs or {}))
        raise ForbiddenOperation(f"creates an object of {cls!r}, not a global it names")

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def _instantiate(self, klass, args):  # INST and OBJ (protocols 0 and 1)
        self.append(self._call(klass, args))

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Unpickled):
            inst.__setstate__(state)
        elif type(inst) is torch.Tensor:
            inst.set_(*state)  # tensors of old torch versions
        elif type(inst) is torch.nn.Parameter:
            inst.__setstate__(state)
        elif type(inst) in (OrderedDict, Counter) and isinstance(state, dict):
            inst.__dict__.update(state)  # e.g. a state dict's _metadata
        else:
            raise ForbiddenOperation(f"sets the state of {inst!r}")
    dispatch[pickle.BUILD[0]] = load_build

    def _container(self, kinds, operation):
        target = self.stack[-1]
        if type(target) in kinds or isinstance(target, Unpickled):
            return target
        raise ForbiddenOperation(f"adds items to a {type(target).__name__} ({operation})")

    def load_append(self):
        item = self.stack.pop()
        self._container((list,), "APPEND").append(item)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        self._container((list,), "APPENDS").extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._container((dict, OrderedDict, Counter), "SETITEM")[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self._container((dict, OrderedDict, Counter), "SETITEMS")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        items = self.pop_mark()
        target = self._container((set,), "ADDITEMS")
        for item in items:
            target.add(item)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def _persistent(self, pid):
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else kind
        if kind == "storage":
            return self.persistent_load(pid)
        if kind == "module" and len(pid) > 1 and isinstance(pid[1], type) and issubclass(pid[1], Unpickled):
            return pid[1]  # a whole pickled nn.Module (torch < 1.6 full-model files): its class, a stand-in
        raise ForbiddenOperation(f"loads persistent id {pid!r}, not a storage")

    def load_binpersid(self):
        self.append(self._persistent(self.stack.pop()))
    dispatch[pickle.BINPERSID[0]] = load_binpersid

    def load_persid(self):
        self.append(self._persistent(self.readline()[:-1]))
    dispatch[pickle.PERSID[0]] = load_persid

    def load_ext(self):
        # copyreg's extension registry is process-wide and caches real objects: never consulted.
        raise ForbiddenOperation("uses a copyreg extension code")
    for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_opcode[0]] = load_ext
    del _opcode


def load(file, **kwargs):
    """One object from an open binary file (what torch.load calls for a legacy file's headers)."""
    return Unpickler(file, **kwargs).load()

/* ember's reactor entry for CPython on wasm32-wasi: the interpreter starts
 * once (a constructor, run by the reactor's _initialize) and imports the
 * bootstrap (ember_bootstrap.py, sent by emberd in /var/runtime), which
 * imports the handler; `handle` serves one invocation.
 *
 * The guest ABI for reactors that report Lambda errors (DESIGN.md, "Wasm
 * functions"): `handle` returns 0 when stdout holds the response, non-zero
 * when stdout holds Lambda's error document ({errorMessage, errorType,
 * requestId, stackTrace}); `_initialize` exits with a non-zero status after
 * writing an init error's document to stdout.
 *
 * SnapStart (Lambda's runtime hooks): the agent calls the exports
 * `ember_before_snapshot` (after _initialize, before the snapshot) and
 * `ember_after_restore` (in each restored clone, before its first
 * invocation); they run the hooks registered with snapshot_restore_py
 * (the bootstrap's before_snapshot/after_restore) and, like _initialize,
 * exit non-zero after writing the failure's document to stdout. */
#include "Python.h"
#include <wasi/api.h>
#include <stdlib.h>
#include <string.h>

static PyObject *invoke_fn;
static PyObject *bootstrap;

__attribute__((constructor)) static void ember_python_init(void) {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    PyStatus st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        Py_ExitStatusException(st);
    }
    PyObject *m = PyImport_ImportModule("ember_bootstrap");
    if (m == NULL) {
        PyErr_Print();
        exit(70);
    }
    bootstrap = m;
    invoke_fn = PyObject_GetAttrString(m, "invoke");
    PyObject *r = PyObject_CallMethod(m, "init", NULL);
    if (r == NULL || invoke_fn == NULL) {
        PyErr_Print();
        exit(71);
    }
    long status = PyLong_AsLong(r);
    Py_DECREF(r);
    if (status != 0) {
        /* The bootstrap wrote the init error's document to stdout. */
        exit(1);
    }
}

/* The environment of this invocation, read from WASI each time (wasi-libc
 * caches `environ` at its first use). */
static PyObject *env_now(void) {
    __wasi_size_t count = 0, size = 0;
    if (__wasi_environ_sizes_get(&count, &size) != 0) return PyDict_New();
    uint8_t **ptrs = malloc(sizeof(uint8_t *) * (count + 1));
    uint8_t *buf = malloc(size + 1);
    PyObject *d = PyDict_New();
    if (ptrs && buf && d && __wasi_environ_get(ptrs, buf) == 0) {
        for (__wasi_size_t i = 0; i < count; i++) {
            char *kv = (char *)ptrs[i];
            char *eq = strchr(kv, '=');
            if (!eq) continue;
            PyObject *k = PyUnicode_DecodeUTF8(kv, eq - kv, "surrogateescape");
            PyObject *v = PyUnicode_DecodeUTF8(eq + 1, strlen(eq + 1), "surrogateescape");
            if (k && v) PyDict_SetItem(d, k, v);
            Py_XDECREF(k);
            Py_XDECREF(v);
        }
    }
    free(ptrs);
    free(buf);
    return d;
}

/* One invocation: 0 = stdout is the response, 1 = stdout is an error document. */
__attribute__((export_name("handle"))) int handle(void) {
    PyObject *env = env_now();
    PyObject *r = PyObject_CallOneArg(invoke_fn, env);
    Py_XDECREF(env);
    if (r == NULL) {
        PyErr_Print();
        exit(72);
    }
    long status = PyLong_AsLong(r);
    Py_DECREF(r);
    return status != 0;
}

/* Runs the bootstrap's hook runner `name` (absent in an older bootstrap:
 * nothing to run); a non-zero status exits after its document. */
static void run_hooks(const char *name) {
    if (bootstrap == NULL || !PyObject_HasAttrString(bootstrap, name)) return;
    PyObject *r = PyObject_CallMethod(bootstrap, name, NULL);
    if (r == NULL) {
        PyErr_Print();
        exit(73);
    }
    long status = PyLong_AsLong(r);
    Py_DECREF(r);
    if (status != 0) {
        exit(1);
    }
}

__attribute__((export_name("ember_before_snapshot"))) void ember_before_snapshot(void) {
    run_hooks("before_snapshot");
}

__attribute__((export_name("ember_after_restore"))) void ember_after_restore(void) {
    run_hooks("after_restore");
}

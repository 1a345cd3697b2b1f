/* handler.c — an ember function in C, compiled to wasm32-wasi with Debian's
 * clang + lld + wasi-libc (see build.sh). WAGI convention: the event is read
 * from stdin, the response written to stdout, logs to stderr.
 *
 * Event:    {"name": "Ada", "numbers": [1, 2, 3.5], ...any other JSON...}
 * Response: {"greeting":"Hello, Ada!","count":3,"sum":6.5,
 *            "function":"<AWS_LAMBDA_FUNCTION_NAME>","request_id":"<id>"}
 * Invalid JSON → {"error":"..."} on stdout and exit status 1 (a function error).
 *
 * The parser is a small bounded recursive-descent JSON validator: it walks
 * the whole document, remembers the top-level "name" string and the numbers
 * of the top-level "numbers" array, and rejects anything malformed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENT (6 * 1024 * 1024)
#define MAX_DEPTH 64

struct parser {
    const char *s, *end;
    const char *err;
    char name[128];
    int count;
    double sum;
};

static void ws(struct parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int fail(struct parser *p, const char *why) {
    if (!p->err) p->err = why;
    return 0;
}

/* Parses a string; copies at most cap-1 bytes of it into out (if given). */
static int string(struct parser *p, char *out, size_t cap) {
    size_t n = 0;
    if (p->s >= p->end || *p->s != '"') return fail(p, "expected a string");
    p->s++;
    while (p->s < p->end && *p->s != '"') {
        char c = *p->s++;
        if ((unsigned char)c < 0x20) return fail(p, "control character in string");
        if (c == '\\') {
            if (p->s >= p->end) return fail(p, "unterminated escape");
            c = *p->s++;
            if (c == 'u') {
                if (p->end - p->s < 4) return fail(p, "short \\u escape");
                p->s += 4;
                c = '?';
            } else if (!strchr("\"\\/bfnrt", c)) {
                return fail(p, "bad escape");
            }
        }
        if (out && n + 1 < cap && c != '"' && c != '\\') out[n++] = c;
    }
    if (p->s >= p->end) return fail(p, "unterminated string");
    p->s++;
    if (out) out[n] = 0;
    return 1;
}

static int number(struct parser *p, double *v) {
    char buf[64];
    size_t n = 0;
    while (p->s < p->end && strchr("+-0123456789.eE", *p->s) && n + 1 < sizeof buf) buf[n++] = *p->s++;
    buf[n] = 0;
    char *stop;
    *v = strtod(buf, &stop);
    if (n == 0 || *stop) return fail(p, "bad number");
    return 1;
}

static int value(struct parser *p, int depth, int collect_numbers);

static int literal(struct parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n)) return fail(p, "unexpected token");
    p->s += n;
    return 1;
}

static int array(struct parser *p, int depth, int collect_numbers) {
    p->s++;
    ws(p);
    if (p->s < p->end && *p->s == ']') { p->s++; return 1; }
    for (;;) {
        if (!value(p, depth + 1, collect_numbers)) return 0;
        ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == ']') { p->s++; return 1; }
        return fail(p, "expected , or ] in array");
    }
}

static int object(struct parser *p, int depth) {
    p->s++;
    ws(p);
    if (p->s < p->end && *p->s == '}') { p->s++; return 1; }
    for (;;) {
        char key[32];
        ws(p);
        if (!string(p, key, sizeof key)) return 0;
        ws(p);
        if (p->s >= p->end || *p->s != ':') return fail(p, "expected : in object");
        p->s++;
        ws(p);
        int top = depth == 0;
        if (top && !strcmp(key, "name") && p->s < p->end && *p->s == '"') {
            if (!string(p, p->name, sizeof p->name)) return 0;
        } else if (!value(p, depth + 1, top && !strcmp(key, "numbers"))) {
            return 0;
        }
        ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == '}') { p->s++; return 1; }
        return fail(p, "expected , or } in object");
    }
}

static int value(struct parser *p, int depth, int collect_numbers) {
    double v;
    if (depth > MAX_DEPTH) return fail(p, "nested too deeply");
    ws(p);
    if (p->s >= p->end) return fail(p, "unexpected end of input");
    switch (*p->s) {
    case '{': return object(p, depth);
    case '[': return array(p, depth, collect_numbers);
    case '"': return string(p, NULL, 0);
    case 't': return literal(p, "true");
    case 'f': return literal(p, "false");
    case 'n': return literal(p, "null");
    default:
        if (!number(p, &v)) return 0;
        if (collect_numbers) { p->count++; p->sum += v; }
        return 1;
    }
}

/* Writes s as a JSON string body (quotes and backslashes escaped). */
static void put_escaped(const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s >= 0x20) putchar(*s);
    }
}

int main(void) {
    static char event[MAX_EVENT + 1];
    size_t len = fread(event, 1, MAX_EVENT, stdin);
    struct parser p = { .s = event, .end = event + len, .err = NULL, .name = "world" };
    fprintf(stderr, "json-c: got a %zu-byte event\n", len);
    ws(&p);
    int ok = p.s < p.end && *p.s == '{' ? object(&p, 0) : fail(&p, "the event must be a JSON object");
    ws(&p);
    if (ok && p.s != p.end) ok = fail(&p, "trailing bytes after the object");
    if (!ok) {
        printf("{\"error\":\"");
        put_escaped(p.err);
        printf("\",\"offset\":%ld}", (long)(p.s - event));
        fprintf(stderr, "json-c: invalid event: %s\n", p.err);
        return 1;
    }
    const char *fn = getenv("AWS_LAMBDA_FUNCTION_NAME");
    const char *id = getenv("AWS_LAMBDA_REQUEST_ID");
    printf("{\"greeting\":\"Hello, ");
    put_escaped(p.name);
    printf("!\",\"count\":%d,\"sum\":%g,\"function\":\"", p.count, p.sum);
    put_escaped(fn ? fn : "");
    printf("\",\"request_id\":\"");
    put_escaped(id ? id : "");
    printf("\"}");
    return 0;
}

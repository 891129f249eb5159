/* SPDX-License-Identifier: Apache-2.0 */
/* The stored text of a JSON document, rebuilt from the remembered text of its unchanged parts:
 * a document of 1,000 listeners where one changed is serialized for one listener, not 1,000. */
#ifndef SLB_STATE_JSONCACHE_H
#define SLB_STATE_JSONCACHE_H

#include <jansson.h>
#include <stddef.h>

/* The text of each piece of the document last dumped, by the json_t of the piece. A piece is
 * a value of the document's object, or an element when that value is an array (a listener, a
 * group, the settings). Each remembered piece holds a reference to its json_t, so the pointer
 * cannot be reused for another value while it is remembered, and a piece that is in no later
 * document is forgotten by the next dump: the cache holds at most the pieces of one document.
 *
 * The contract that makes this correct: a json_t that was dumped is never changed in place
 * afterwards (an applied configuration document is immutable; a change builds a new document
 * that shares the unchanged pieces). Builds with AddressSanitizer check it: each reused text is
 * compared with a fresh serialization, and a difference is logged as an error and repaired.
 *
 * Owned by its creator (a state backend keeps one for "config"), used on one thread. */
struct slb_json_cache;

struct slb_json_cache *slb_json_cache_new(void);
/* Accepts NULL. Drops every reference held. */
void slb_json_cache_free(struct slb_json_cache *c);

/* doc serialized exactly as json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) followed by "\n",
 * into a malloc'd NUL-terminated *out of *len bytes (without the NUL). 0 or -ENOMEM / -EINVAL
 * (doc cannot be serialized). On failure the cache is emptied, never left half-updated. */
int slb_json_cache_dump(struct slb_json_cache *c, const json_t *doc, char **out, size_t *len);

/* How many pieces are remembered, and how many of the last dump's pieces were reused and
 * serialized (for tests and measurements). */
struct slb_json_cache_stats {
    size_t pieces;
    size_t reused;
    size_t serialized;
};
void slb_json_cache_stats(const struct slb_json_cache *c, struct slb_json_cache_stats *out);

#endif

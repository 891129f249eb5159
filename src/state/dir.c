/* SPDX-License-Identifier: Apache-2.0 */
/* The state directory as a state backend: documents are the files slbd has always written
 * (config.json, tickets.json, certs/<id>.json), revisions are hashes of their bytes. */
#include "state/backend.h"

#include "core/fsio.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CERTS_SUBDIR "certs"

struct dir_backend {
    struct slb_backend base;
    bool readonly;
    char dir[4096];
};

void slb_doc_clear(struct slb_doc *d)
{
    if (d->data) {
        OPENSSL_cleanse(d->data, d->len);
        free(d->data);
    }
    memset(d, 0, sizeof(*d));
}

uint64_t slb_backend_dir_rev(const void *data, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    uint64_t rev = 1;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen >= 8) {
        memcpy(&rev, md, sizeof(rev));
        if (rev == SLB_REV_ABSENT || rev == SLB_REV_ANY)
            rev = 1;
    }
    return rev;
}

/* The directory and file name of key: "config" -> (DIR, config.json), "certs/ID" ->
 * (DIR/certs, ID.json). false for a key that is not a document of the directory. */
static bool key_file(const struct dir_backend *d, const char *key, char *dir, size_t dsize,
                     char *name, size_t nsize)
{
    const char *sub = NULL, *stem = key;
    size_t pl = strlen(SLB_DOC_CERTS);
    if (strncmp(key, SLB_DOC_CERTS, pl) == 0) {
        sub = CERTS_SUBDIR;
        stem = key + pl;
        if (!*stem || strchr(stem, '/') || stem[0] == '.')
            return false;
    } else if (strcmp(key, SLB_DOC_CONFIG) != 0 && strcmp(key, SLB_DOC_TICKETS) != 0) {
        return false;
    }
    int n = sub ? snprintf(dir, dsize, "%s/%s", d->dir, sub) : snprintf(dir, dsize, "%s", d->dir);
    int m = snprintf(name, nsize, "%s.json", stem);
    return n > 0 && (size_t)n < dsize && m > 0 && (size_t)m < nsize;
}

static void dir_where(struct slb_backend *b, const char *key, char *out, size_t size)
{
    struct dir_backend *d = (struct dir_backend *)b;
    char dir[4200], name[SLB_DOC_KEY_MAX + 8];
    if (strcmp(key, SLB_DOC_CERTS) == 0)
        snprintf(out, size, "%s/%s", d->dir, CERTS_SUBDIR);
    else if (key_file(d, key, dir, sizeof(dir), name, sizeof(name)))
        snprintf(out, size, "%s/%s", dir, name);
    else
        snprintf(out, size, "%s/%s", d->dir, key);
}

/* The current revision of a file: SLB_REV_ABSENT when it does not exist. */
static int current_rev(const char *dir, const char *name, uint64_t *rev)
{
    char path[4400], *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int rc = slb_fs_read_all(path, SIZE_MAX / 2, &data, &len);
    if (rc == -ENOENT) {
        *rev = SLB_REV_ABSENT;
        return 0;
    }
    if (rc < 0)
        return rc;
    *rev = slb_backend_dir_rev(data, len);
    OPENSSL_cleanse(data, len);
    free(data);
    return 0;
}

static int check_expected(const char *dir, const char *name, uint64_t expect)
{
    if (expect == SLB_REV_ANY)
        return 0;
    uint64_t cur;
    int rc = current_rev(dir, name, &cur);
    if (rc < 0)
        return rc;
    return cur == expect ? 0 : SLB_ECONFLICT;
}

static int dir_get(struct slb_backend *b, const char *key, size_t max, struct slb_doc *out,
                   struct slb_err *err)
{
    struct dir_backend *d = (struct dir_backend *)b;
    char dir[4200], name[SLB_DOC_KEY_MAX + 8], path[4400];
    memset(out, 0, sizeof(*out));
    if (!key_file(d, key, dir, sizeof(dir), name, sizeof(name)))
        return -ENOENT;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    /* A private key or ticket key others could read may have leaked: refused (as admin.token
     * is) rather than used. */
    bool tickets = strcmp(key, SLB_DOC_TICKETS) == 0;
    if ((tickets || strncmp(key, SLB_DOC_CERTS, strlen(SLB_DOC_CERTS)) == 0) &&
        slb_fs_check_secret_path(path, "state_insecure",
                                 tickets ? " or delete it (slbd then generates new keys)" : "",
                                 err))
        return SLB_EINVAL;
    int rc = slb_fs_read_all(path, max, &out->data, &out->len);
    if (rc < 0)
        return rc;
    snprintf(out->key, sizeof(out->key), "%s", key);
    out->rev = slb_backend_dir_rev(out->data, out->len);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files of a prefix's directory in name order (start-up logs and errors do not depend on
 * readdir order). Dot-files are leftovers of interrupted atomic writes and are skipped. */
static int dir_list(struct slb_backend *b, const char *prefix, slb_backend_list_fn fn, void *arg)
{
    struct dir_backend *d = (struct dir_backend *)b;
    if (strcmp(prefix, SLB_DOC_CERTS) != 0)
        return -EINVAL; /* the directory's only collection */
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/%s", d->dir, CERTS_SUBDIR);
    DIR *dh = opendir(dir);
    if (!dh)
        return errno == ENOENT && d->readonly ? 0 : -errno;
    char **v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l <= 5 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[n] = strdup(de->d_name))) {
            rc = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(dh);
    if (rc == 0 && n > 0)
        qsort(v, n, sizeof(*v), cmp_str);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char key[4200];
        size_t l = strlen(v[i]);
        snprintf(key, sizeof(key), "%s%.*s", SLB_DOC_CERTS, (int)(l - 5), v[i]);
        rc = fn(key, arg);
    }
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return rc;
}

static int dir_put(struct slb_backend *b, const char *key, const void *data, size_t len,
                   uint64_t expect, uint64_t *rev)
{
    struct dir_backend *d = (struct dir_backend *)b;
    char dir[4200], name[SLB_DOC_KEY_MAX + 8];
    if (d->readonly)
        return -EROFS;
    if (!key_file(d, key, dir, sizeof(dir), name, sizeof(name)))
        return -EINVAL;
    int rc = check_expected(dir, name, expect);
    if (rc < 0)
        return rc;
    rc = slb_fs_write_atomic(dir, name, data, len, 0600);
    if (rc < 0)
        return rc;
    if (rev)
        *rev = slb_backend_dir_rev(data, len);
    return 0;
}

static int dir_del(struct slb_backend *b, const char *key, uint64_t expect)
{
    struct dir_backend *d = (struct dir_backend *)b;
    char dir[4200], name[SLB_DOC_KEY_MAX + 8];
    if (d->readonly)
        return -EROFS;
    if (!key_file(d, key, dir, sizeof(dir), name, sizeof(name)))
        return -ENOENT;
    int rc = check_expected(dir, name, expect);
    return rc < 0 ? rc : slb_fs_remove(dir, name);
}

static int dir_watch(struct slb_backend *b, const char *prefix, slb_backend_watch_fn fn, void *arg)
{
    /* The state lock makes this process the directory's only writer: nobody else changes
     * it while we run (an operator's edit of config.json reaches us through SIGHUP). */
    return 0;
}

static void dir_free(struct slb_backend *b)
{
    free(b);
}

static const struct slb_backend_ops dir_ops = {
    .name = "dir",
    .shared = false,
    .get = dir_get,
    .list = dir_list,
    .put = dir_put,
    .del = dir_del,
    .watch = dir_watch,
    .where = dir_where,
    .free = dir_free,
};

/* certs/ holds private keys: created 0700, and others must not even list the ids. */
int slb_backend_dir_prepare(struct slb_backend *b, struct slb_err *err)
{
    struct dir_backend *d = (struct dir_backend *)b;
    char dir[4200];
    struct stat st;
    if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", d->dir, CERTS_SUBDIR) >= sizeof(d->dir))
        return slb_err_set(err, 500, "state_dir", d->dir, "the state directory path is too long");
    if (d->readonly && lstat(dir, &st) < 0 && errno == ENOENT)
        return 0; /* no certificate was ever stored */
    if (!d->readonly && mkdir(dir, 0700) < 0 && errno != EEXIST)
        return slb_err_set(err, 500, "state_dir", dir, "cannot create %s: %s", dir,
                           strerror(errno));
    /* EACCES on the state directory, ELOOP, EIO...: say which, not "not a directory". */
    if (stat(dir, &st) < 0)
        return slb_err_set(err, 500, "state_dir", dir, "cannot use %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return slb_err_set(err, 500, "state_dir", dir, "%s is not a directory", dir);
    if (slb_fs_check_owner(dir, &st, "state_insecure", err))
        return SLB_EINVAL;
    if ((st.st_mode & 077) != 0 && !d->readonly) {
        slb_warn("%s was accessible to group or others; setting its mode to 0700", dir);
        if (chmod(dir, 0700) < 0)
            return slb_err_set(err, 500, "state_dir", dir, "cannot chmod %s: %s", dir,
                               strerror(errno));
    }
    return 0;
}

struct slb_backend *slb_backend_dir_new(const char *dir, bool readonly, struct slb_err *err)
{
    struct dir_backend *d = calloc(1, sizeof(*d));
    if (!d) {
        slb_err_set(err, 500, "internal", dir, "out of memory");
        return NULL;
    }
    d->base.ops = &dir_ops;
    d->readonly = readonly;
    if ((size_t)snprintf(d->dir, sizeof(d->dir), "%s", dir) >= sizeof(d->dir) - 16) {
        slb_err_set(err, 500, "state_dir", dir, "the state directory path is too long");
        goto fail;
    }
    return &d->base;
fail:
    free(d);
    return NULL;
}

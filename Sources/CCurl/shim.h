#ifndef SNAPMOUNT_CCURL_SHIM_H
#define SNAPMOUNT_CCURL_SHIM_H

// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call;
// these typed wrappers are the only way the Swift code reaches them.
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

typedef size_t (*ccurl_data_callback)(char *_Nonnull data, size_t size, size_t count,
                                      void *_Nullable context);

static inline CURLcode ccurl_setopt_long(CURL *_Nonnull handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_setopt_off_t(CURL *_Nonnull handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_setopt_string(CURL *_Nonnull handle, CURLoption option,
                                           const char *_Nullable value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_setopt_pointer(CURL *_Nonnull handle, CURLoption option,
                                            void *_Nullable value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_setopt_slist(CURL *_Nonnull handle, CURLoption option,
                                          struct curl_slist *_Nullable list) {
    return curl_easy_setopt(handle, option, list);
}

static inline CURLcode ccurl_setopt_data_callback(CURL *_Nonnull handle, CURLoption option,
                                                  ccurl_data_callback _Nullable callback) {
    return curl_easy_setopt(handle, option, callback);
}

static inline CURLcode ccurl_getinfo_long(CURL *_Nonnull handle, CURLINFO info, long *_Nonnull value) {
    return curl_easy_getinfo(handle, info, value);
}

/// curl_global_init(CURL_GLOBAL_DEFAULT): the macro is a bit mask Swift does not import.
static inline CURLcode ccurl_global_init_default(void) {
    return curl_global_init(CURL_GLOBAL_DEFAULT);
}

/// The run-time libcurl version ("7.88.1").
static inline const char *_Nonnull ccurl_library_version(void) {
    curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    return (info && info->version) ? info->version : "unknown";
}

#endif

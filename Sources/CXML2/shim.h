#ifndef SNAPMOUNT_CXML2_SHIM_H
#define SNAPMOUNT_CXML2_SHIM_H

// Debian builds libxml2 with ICU, and its encoding.h then includes the system's ICU
// headers, whose types clash with the ICU that Foundation carries in any module that sees
// both. snapmount never touches encoding handlers (only pointers to them), so the ICU part
// of the headers is switched off here.
#include <libxml/xmlversion.h>
#undef LIBXML_ICU_ENABLED
#include <libxml/parser.h>
#include <libxml/tree.h>

/// xmlParserVersion is a macro over a thread-local accessor, which Swift cannot import.
static inline const char *_Nonnull cxml2_parser_version(void) {
    const char *version = xmlParserVersion;
    return version ? version : "unknown";
}

#endif

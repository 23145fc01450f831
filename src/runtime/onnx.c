/* ONNX import (not yet built: see kiln_model_import_onnx). */
#include "model.h"

kiln_status kiln_model_import_onnx(const char *path, kiln_model **out)
{
    if (out) *out = NULL;
    return km_error(KILN_ERR_UNSUPPORTED, "%s: ONNX import is not built into this version",
                    path ? path : "(null)");
}

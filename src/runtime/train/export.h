/*
 * A trained net as a .kiln model file (model_file.h): the graph (input
 * "image" 1 x C x H x W; Conv, BatchNormalization, Relu, MaxPool,
 * AveragePool, GlobalAveragePool, Flatten, Dense, and a final Softmax when
 * the architecture ends in one), its weights, and the metadata the trainer
 * keeps (name, arch, mean, std, labels, dataset, metrics.*). The same file
 * is served, inspected and run by the runtime, and read back here by
 * `kiln eval`.
 */
#ifndef KILN_RUNTIME_TRAIN_EXPORT_H
#define KILN_RUNTIME_TRAIN_EXPORT_H

#include "ckpt.h"
#include "graph.h"
#include "net.h"

/* The net's inference graph with copies of its weights. */
kiln_status kt_export_graph(const kt_net *net, kg_graph **out, kiln_errbuf *err);

/* Writes the net and meta to `path` as a .kiln file. */
kiln_status kt_export_kiln(const char *path, const kt_net *net, const kt_meta *meta,
                           kiln_errbuf *err);

/* Reads a .kiln file written by kt_export_kiln() into a net for `batch`
 * samples (its 'arch' metadata gives the layers; the graph's constants the
 * weights) and its metadata. */
kiln_status kt_import_kiln(const char *path, int batch, kt_net *net, kt_meta *meta,
                           kiln_errbuf *err);

#endif

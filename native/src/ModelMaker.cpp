// placeholder until the model maker lands (helper writes the real one)
#include "addon.h"
void InitModelMaker(Napi::Env, Napi::Object) {}

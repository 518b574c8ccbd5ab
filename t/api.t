#!/usr/bin/perl

# The NGINX Plus-compatible REST API (`api` directive) on one node without
# zone_sync: every endpoint, method and error code, response headers,
# HEAD, keep-alive, ?fields=, JSON escaping, versions, keyval writes seen
# by the keyval variables (http and stream) and the other way round.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Time::HiRes ();

use Test::Nginx;
use Test::Nginx::Stream qw/ stream /;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http stream zone_sync/)->plan(127);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=one:1m;
    keyval_zone  zone=tmo:1m timeout=1h;
    keyval_zone  zone=bin:1m;
    keyval       $arg_k $kv zone=one;
    keyval       $uri $binkv zone=bin;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        client_body_buffer_size 16k;

        location /api/ {
            api write=on;
        }

        location /ro/ {
            api;
        }

        location = /exact {
            api;
        }

        location /get {
            return 200 "v=$kv";
        }

        location /set {
            set $kv $arg_v;
            return 200 "set";
        }

        location /bin/ {
            set $binkv "raw";
            return 200 "bin";
        }
    }
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone  zone=sone:1m;
    keyval       $remote_addr $x zone=sone;

    server {
        listen       127.0.0.1:8081;
        return       "x=$x";
    }
}

EOF

$t->run();

my $json = JSON::PP->new->utf8->canonical->allow_nonref;

# (status, data, raw reply)
sub api {
    my ($method, $uri, $body, %extra) = @_;
    return http_json(port(8080), $method, $uri, $body, %extra);
}

sub header {
    my ($reply, $name) = @_;
    my ($head) = split /\x0d?\x0a\x0d?\x0a/, $reply // '', 2;
    return $head =~ /^\Q$name\E:\s*(.*?)\s*$/mi ? $1 : undef;
}

sub code { my ($data) = @_; return ref $data ? $data->{error}{code} // '' : '' }

sub zone { return (api(GET => "/api/9/http/keyvals/$_[0]"))[1] }

###############################################################################

# versions and endpoint lists

my ($s, $d, $r) = api(GET => '/api/');
is($s, 200, 'versions');
is_deeply($d, [1 .. 9], 'versions list');
is(header($r, 'Content-Type'), 'application/json', 'content type');
is(header($r, 'Content-Length'), length(http_content($r)), 'content length');

my @root = qw/nginx processes connections slabs http stream resolvers ssl
    workers/;
is_deeply((api(GET => '/api/9/'))[1], \@root, 'endpoints');
is_deeply((api(GET => '/api/9'))[1], \@root, 'endpoints without slash');
is_deeply((api(GET => '/api/9/http/'))[1], [qw/requests server_zones
    location_zones caches limit_conns limit_reqs keyvals upstreams/],
    'http endpoints');
is_deeply((api(GET => '/api/9/stream/'))[1],
    [qw/server_zones limit_conns keyvals upstreams/],
    'stream endpoints without zone_sync');
is_deeply((api(GET => '/api/1/stream/'))[1], [qw/server_zones upstreams/],
    'stream endpoints of v1');
is_deeply((api(GET => '/exact'))[1], [1 .. 9], 'exact location');

# unknown versions and paths

for my $uri ('/api/10/', '/api/0/', '/api/09/', '/api/abc/nginx', '/api/-1/') {
    ($s, $d) = api(GET => $uri);
    ok($s == 404 && code($d) eq 'UnknownVersion', "unknown version $uri");
}

($s, $d, $r) = api(GET => '/api/9/nope');
is($s, 404, 'unknown path');
is(code($d), 'PathNotFound', 'unknown path code');
is($d->{error}{status}, 404, 'error status');
like($d->{error}{text}, qr/path not found/, 'error text');
like($d->{request_id}, qr/^[0-9a-f]{32}\z/, 'request_id');
like($d->{href}, qr/^https?:\/\//, 'href');
is(header($r, 'Content-Type'), 'application/json', 'error content type');
ok(!exists $d->{path}, 'v9 error has no path');

($s, $d) = api(GET => '/api/3/nope');
ok($s == 404 && exists $d->{path} && exists $d->{method}
    && code($d) eq 'PathNotFound', 'v3 error has path and method');

is((api(GET => '/api/9//http/'))[0], 200, 'merged slashes');
is(code((api(GET => '/api/1/stream/keyvals/'))[1]), 'PathNotFound',
    'no stream keyvals in v1');
is(code((api(GET => '/api/9/stream/zone_sync/'))[1]), 'PathNotFound',
    'zone_sync 404 without zone_sync');
is(code((api(GET => '/api/9/stream/zone_sync'))[1]), 'PathNotFound',
    'zone_sync 404 without slash');

# /nginx

($s, $d) = api(GET => '/api/9/nginx');
is($s, 200, 'nginx');
is_deeply([sort keys %$d], [sort qw/version build address generation
    load_timestamp timestamp pid ppid/], 'nginx members');
like($d->{version}, qr/^\d+\.\d+\.\d+\z/, 'nginx version');
is($d->{address}, '127.0.0.1', 'nginx address');
is($d->{generation}, 0, 'nginx generation');
like($d->{load_timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/,
    'nginx load_timestamp');
like($d->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/,
    'nginx timestamp');
ok($d->{timestamp} ge $d->{load_timestamp}, 'timestamp after load');
ok(grep({ $_ == $d->{pid} } $t->worker_pids()), 'nginx pid is a worker');
is($d->{ppid}, $t->master_pid(), 'nginx ppid is the master');
my $load1 = $d->{load_timestamp};

($s, $d) = api(GET => '/api/9/nginx?fields=version,pid');
is_deeply([sort keys %$d], [qw/pid version/], 'nginx fields');
($s, $d) = api(GET => '/api/9/nginx?fields=');
is_deeply($d, {}, 'nginx empty fields');

# methods

($s, $d, $r) = api(POST => '/api/9/nginx', '{}');
ok($s == 405 && code($d) eq 'MethodNotSupported', 'POST nginx');
is(header($r, 'Allow'), 'GET, HEAD', 'POST nginx Allow');
($s, $d, $r) = api(PUT => '/api/9/http/keyvals/one', '{"a":"1"}');
ok($s == 405 && code($d) eq 'MethodNotSupported', 'PUT keyvals');
is(header($r, 'Allow'), 'GET, HEAD, POST, PATCH, DELETE', 'PUT Allow');
is(code((api(OPTIONS => '/api/9/http/keyvals/one'))[1]),
    'MethodNotSupported', 'OPTIONS keyvals');

# HEAD

$r = http_head('/api/9/nginx');
is(http_status($r), 200, 'HEAD');
is(http_content($r), '', 'HEAD no body');
ok(header($r, 'Content-Length') > 50, 'HEAD content length');
is(header($r, 'Content-Type'), 'application/json', 'HEAD content type');
$r = http_head('/api/9/nope');
ok(http_status($r) == 404 && http_content($r) eq ''
    && header($r, 'Content-Length') > 0, 'HEAD 404');

# keyvals: reads

($s, $d) = api(GET => '/api/9/http/keyvals/');
is_deeply($d, { one => {}, tmo => {}, bin => {} }, 'all zones empty');
is_deeply((api(GET => '/api/9/stream/keyvals/'))[1], { sone => {} },
    'stream zones');
($s, $d) = api(GET => '/api/9/http/keyvals/nozone');
ok($s == 404 && code($d) eq 'KeyvalNotFound', 'unknown zone');
like($d->{error}{text}, qr/nozone/, 'unknown zone text');
is(code((api(GET => '/api/9/stream/keyvals/one'))[1]), 'KeyvalNotFound',
    'http zone is not a stream zone');

# POST

($s, $d, $r) = api(POST => '/api/9/http/keyvals/one', '{"a":"1"}');
is($s, 201, 'POST');
is(http_content($r), '', 'POST no body');
is_deeply(zone('one'), { a => '1' }, 'POST stored');
is(http_content(http_get('/get?k=a')), 'v=1', 'POST seen by variable');

($s, $d) = api(POST => '/api/9/http/keyvals/one', '{"a":"2"}');
ok($s == 409 && code($d) eq 'KeyvalKeyExists', 'POST existing');
is_deeply(zone('one'), { a => '1' }, 'POST existing changed nothing');

($s, $d) = api(POST => '/api/9/http/keyvals/one', '{"b":"1","c":"2"}');
ok($s == 400 && code($d) eq 'KeyvalFormatError', 'POST several, not empty');
is_deeply(zone('one'), { a => '1' }, 'POST several changed nothing');

is((api(POST => '/api/9/http/keyvals/one', '{"n":12,"t":true}'))[0], 400,
    'POST several numbers');
is((api(POST => '/api/9/http/keyvals/one', '{"n":12}'))[0], 201,
    'POST number');
is((api(POST => '/api/9/http/keyvals/one', '{"t":false}'))[0], 201,
    'POST bool');
is_deeply(zone('one'), { a => '1', n => '12', t => 'false' },
    'numbers and booleans as text');

($s, $d) = api(POST => '/api/9/http/keyvals/tmo',
    '{"x":"1","y":"2","z":{"value":"3","expire":3600000}}');
is($s, 201, 'POST several into empty zone');
is_deeply(zone('tmo'), { x => 1, y => 2, z => 3 }, 'POST several stored');

($s, $d) = api(POST => '/api/9/http/keyvals/one',
    '{"e":{"value":"v","expire":1000}}');
ok($s == 400 && $d->{error}{text} =~ /timeout is not enabled/,
    'expire needs timeout');
is((api(POST => '/api/9/http/keyvals/nozone', '{"a":"1"}'))[0], 404,
    'POST unknown zone');

# GET ?key= and ?fields=

is_deeply((api(GET => '/api/9/http/keyvals/one?key=a'))[1], { a => 1 },
    'key');
($s, $d) = api(GET => '/api/9/http/keyvals/one?key=zz');
ok($s == 404 && code($d) eq 'KeyvalKeyNotFound', 'key not found');
is_deeply((api(GET => '/api/9/http/keyvals/one?fields=a,n'))[1],
    { a => 1, n => 12 }, 'zone fields');
is_deeply((api(GET => '/api/9/http/keyvals/?fields='))[1],
    { one => {}, tmo => {}, bin => {} }, 'all zones, names only');

# PATCH

is((api(PATCH => '/api/9/http/keyvals/one', '{"a":"x"}'))[0], 204, 'PATCH');
is_deeply((api(GET => '/api/9/http/keyvals/one?key=a'))[1], { a => 'x' },
    'PATCH changed');
($s, $d) = api(PATCH => '/api/9/http/keyvals/one', '{"zz":"x"}');
ok($s == 404 && code($d) eq 'KeyvalKeyNotFound', 'PATCH absent key');
ok(!exists zone('one')->{zz}, 'PATCH absent key created nothing');
is((api(PATCH => '/api/9/http/keyvals/one', '{"a":"y","n":"2"}'))[0], 400,
    'PATCH two keys');
is((api(PATCH => '/api/9/http/keyvals/one', '{"a":null}'))[0], 204,
    'PATCH null');
ok(!exists zone('one')->{a}, 'PATCH null deleted');
is(http_content(http_get('/get?k=a')), 'v=', 'delete seen by variable');
is(code((api(PATCH => '/api/9/http/keyvals/one', '{"a":null}'))[1]),
    'KeyvalKeyNotFound', 'PATCH null absent');

# expire

is((api(POST => '/api/9/http/keyvals/tmo',
    '{"e":{"value":"v","expire":300}}'))[0], 201, 'POST expire');
is(zone('tmo')->{e}, 'v', 'expiring key present');
is((api(PATCH => '/api/9/http/keyvals/tmo', '{"x":{"expire":300}}'))[0],
    204, 'PATCH expire');
is(zone('tmo')->{x}, '1', 'PATCH expire keeps value');
is((api(PATCH => '/api/9/http/keyvals/tmo',
    '{"y":{"value":"22","expire":3600000}}'))[0], 204,
    'PATCH value and expire');
ok(wait_for(sub { !exists zone('tmo')->{e} && !exists zone('tmo')->{x} },
    timeout => 5), 'expired');
is_deeply(zone('tmo'), { y => 22, z => 3 }, 'others kept');
is(code((api(PATCH => '/api/9/http/keyvals/one', '{"n":{"expire":5}}'))[1]),
    'KeyvalFormatError', 'PATCH expire needs timeout');
($s, $d) = api(POST => '/api/4/http/keyvals/tmo',
    '{"v4":{"value":"v","expire":300}}');
ok($s == 400 && !exists zone('tmo')->{v4}, 'no expire before v5');

# DELETE

is((api(DELETE => '/api/9/http/keyvals/tmo'))[0], 204, 'DELETE');
is_deeply(zone('tmo'), {}, 'DELETE emptied');
is(code((api(DELETE => '/api/9/http/keyvals/nozone'))[1]), 'KeyvalNotFound',
    'DELETE unknown zone');
is((api(POST => '/api/9/http/keyvals/tmo', '{"p":"1","q":"2"}'))[0], 201,
    'POST several after DELETE');

# write=off

for my $m (qw/POST PATCH DELETE/) {
    ($s, $d) = api($m => '/ro/9/http/keyvals/one', '{"n":"w"}');
    ok($s == 405 && code($d) eq 'MethodDisabled', "$m with write=off");
}
is((api(GET => '/ro/9/http/keyvals/one?key=n'))[1]{n}, '12',
    'write=off changed nothing, GET works');

# variable writes seen by the API

http_get('/set?k=fromvar&v=hello');
is((api(GET => '/api/9/http/keyvals/one?key=fromvar'))[1]{fromvar}, 'hello',
    'variable write seen by API');

# JSON escaping

my $key = "q\"\\/\x{1}\n\t\x{7f} \x{e9}\x{263a}";
($s) = api(POST => '/api/9/http/keyvals/one', { $key => "v\x{0}\x{2028}" });
is($s, 201, 'POST escaped');
($s, $d, $r) = api(GET => '/api/9/http/keyvals/one');
is($d->{$key}, "v\x{0}\x{2028}", 'escaped round trip');
unlike(http_content($r), qr/[\x00-\x1f]/, 'no raw control characters');

http_get('/bin/%FF%FEab%C3');
($s, $d, $r) = api(GET => '/api/9/http/keyvals/bin');
is($s, 200, 'invalid UTF-8 key');
ok(defined $d, 'invalid UTF-8 gives valid JSON')
    or diag(http_content($r));
is((keys %$d)[0], "/bin/\x{ff}\x{fe}ab\x{c3}", 'bytes as \\u00XX');
is((api(GET => '/api/9/http/keyvals/one?key=' . 'q%22%5C%2F%01%0A%09%7F%20'
    . '%C3%A9%E2%98%BA'))[0], 200, 'escaped key by ?key=');

# stream keyvals

is((api(POST => '/api/9/stream/keyvals/sone', '{"127.0.0.1":"hello"}'))[0],
    201, 'stream POST');
is(stream('127.0.0.1:' . port(8081))->read(), 'x=hello',
    'stream variable sees API write');
is_deeply((api(GET => '/api/9/stream/keyvals/'))[1],
    { sone => { '127.0.0.1' => 'hello' } }, 'stream GET');
is((api(PATCH => '/api/9/stream/keyvals/sone', '{"127.0.0.1":"bye"}'))[0],
    204, 'stream PATCH');
is(stream('127.0.0.1:' . port(8081))->read(), 'x=bye', 'stream PATCH seen');
is((api(DELETE => '/api/9/stream/keyvals/sone'))[0], 204, 'stream DELETE');
is(stream('127.0.0.1:' . port(8081))->read(), 'x=', 'stream DELETE seen');

# bodies

($s, $d) = api(POST => '/api/9/http/keyvals/one', 'x' x 20000);
ok($s == 413 && code($d) eq 'BodyTooLarge', 'body over buffer');
($s, $d) = api(POST => '/api/9/http/keyvals/one',
    '{"big":"' . ('x' x 17000) . '"}');
ok($s == 413 && !exists zone('one')->{big}, 'JSON body over buffer');
($s, $d) = api(POST => '/api/9/http/keyvals/one', '');
ok($s == 415 && code($d) eq 'JsonError', 'empty body');
($s, $d) = api(POST => '/api/9/http/keyvals/one', undef);
ok($s == 415, 'no body');

$r = http("POST /api/9/http/keyvals/one HTTP/1.1\r\nHost: localhost\r\n"
    . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    . "5\r\n{\"ch\"\r\n6\r\n:\"ok\"}\r\n0\r\n\r\n");
is(http_status($r), 201, 'chunked body');
is(zone('one')->{ch}, 'ok', 'chunked body stored');

my $chunk = sprintf("%x\r\n%s\r\n", 4096, 'x' x 4096);
$r = http("POST /api/9/http/keyvals/one HTTP/1.1\r\nHost: localhost\r\n"
    . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    . ($chunk x 5) . "0\r\n\r\n");
ok(http_status($r) == 413 && code(decode(http_content($r))) eq 'BodyTooLarge',
    'chunked body over buffer');

# keep-alive: several requests, errors and a refused body on one connection

my $ka = "GET /api/9/nginx HTTP/1.1\r\nHost: localhost\r\n\r\n"
    . "POST /api/9/http/keyvals/one HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Length: 10\r\n\r\n{\"k1\":\"1\"}"
    . "POST /api/9/http/keyvals/one HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Length: 20000\r\n\r\n" . ('x' x 20000)
    . "GET /api/9/nope HTTP/1.1\r\nHost: localhost\r\n\r\n"
    . "HEAD /api/ HTTP/1.1\r\nHost: localhost\r\n\r\n"
    . "PATCH /api/9/http/keyvals/one HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Length: 11\r\n\r\n{\"k1\":null}"
    . "GET /api/9/http/keyvals/one?key=k1 HTTP/1.1\r\nHost: localhost\r\n"
    . "Connection: close\r\n\r\n";
$r = http($ka);
my @st = ($r // "") =~ /HTTP\/1\.1 (\d{3}) /g;
is("@st", "200 201 413 404 200 204 404", "keep-alive pipeline") or diag($r);

# generation after a reload

$t->reload(wait_old => 1);
($s, $d) = api(GET => '/api/9/nginx');
is($d->{generation}, 1, 'generation after reload');
ok($d->{load_timestamp} gt $load1, 'load_timestamp after reload');
is(zone('one')->{n}, '12', 'zone kept across reload');

sub decode { my ($c) = @_; return eval { $json->decode($c // '') } }

###############################################################################
